"""The suite's one synthetic corpus, in the demo corpus layout (`megameta.data.demo.sources`).

``wiki/{en,fr,es}/{train,valid,test}.jsonl`` with topic words per label (a classifier can learn
them, and they agree across languages by meaning), ``udhr/{train,heldout}/{eng,fra,spa,rus}.jsonl``
(articles 0-20 train, 21-30 held out; each article's text is a function of its number and
language, so the same article is the same text in every corpus), and ``udhr/languages.json``
with Latin and Cyrillic scripts. Training runs, the pipeline, the evaluation suite and the
corpus reader's tests all read it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from megameta.data.demo.sources import (
    LABELS,
    UDHR_HELDOUT_ARTICLES,
    UDHR_LANGUAGES_FILE,
    udhr_file,
    wiki_file,
)

# Topic words per label and language: enough signal for a classifier, shared across languages by meaning.
TOPIC_WORDS = {
    "en": [["actor", "singer", "born", "writer"], ["river", "mountain", "city", "coast"], ["war", "empire", "king", "century"],
           ["painting", "music", "film", "poem"], ["engine", "computer", "software", "machine"], ["number", "theorem", "equation", "geometry"],
           ["god", "religion", "philosopher", "belief"], ["food", "sport", "house", "clothing"]],
    "fr": [["acteur", "chanteuse", "née", "écrivain"], ["fleuve", "montagne", "ville", "côte"], ["guerre", "empire", "roi", "siècle"],
           ["peinture", "musique", "film", "poème"], ["moteur", "ordinateur", "logiciel", "machine"], ["nombre", "théorème", "équation", "géométrie"],
           ["dieu", "religion", "philosophe", "croyance"], ["nourriture", "sport", "maison", "vêtement"]],
    "es": [["actor", "cantante", "nacido", "escritor"], ["río", "montaña", "ciudad", "costa"], ["guerra", "imperio", "rey", "siglo"],
           ["pintura", "música", "película", "poema"], ["motor", "computadora", "programa", "máquina"], ["número", "teorema", "ecuación", "geometría"],
           ["dios", "religión", "filósofo", "creencia"], ["comida", "deporte", "casa", "ropa"]],
}  # fmt: skip
FILLER = {
    "en": "the of and in is was a to for with on by from an as at".split(),
    "fr": "le la de et en est était un une pour avec sur par du des les".split(),
    "es": "el la de y en es fue un una para con sobre por del los las".split(),
    "ru": "и в не на что он это как по но из она к у за мы".split(),
}
#: A native topic outside the eight mapped ones (its articles have label null), per language.
UNMAPPED_TOPIC = {"en": "Uncategorized", "fr": "Santé et médecine", "es": "Ciencia ficticia"}
UDHR_CODES = {"en": "eng", "fr": "fra", "es": "spa", "ru": "rus"}
SCRIPTS = {"eng": "Latin", "fra": "Latin", "spa": "Latin", "rus": "Cyrillic"}
UDHR_ARTICLES = 31


def _sentence(rng: random.Random, lang: str, label: int | None, n: int) -> str:
    words = []
    for _ in range(n):
        if label is not None and lang in TOPIC_WORDS and rng.random() < 0.3:
            words.append(rng.choice(TOPIC_WORDS[lang][label]))
        else:
            words.append(rng.choice(FILLER[lang]))
    return " ".join(words).capitalize() + "."


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def split_sizes(docs_per_lang: int) -> dict[str, int]:
    """Articles per wiki split for a corpus of ``docs_per_lang`` training articles per language."""
    return {"train": docs_per_lang, "valid": docs_per_lang // 6, "test": docs_per_lang // 4}


def _wiki_rows(rng: random.Random, lang: str, split: str, n: int, unlabeled_every: int) -> list[dict]:
    rows = []
    for i in range(n):
        label = rng.randrange(len(LABELS))
        text = " ".join(_sentence(rng, lang, label, rng.randint(8, 20)) for _ in range(rng.randint(2, 5)))
        # Drawn like the others (the random stream stays the same), then stripped of its label.
        unlabeled = unlabeled_every and i % unlabeled_every == unlabeled_every - 1
        topic = UNMAPPED_TOPIC[lang] if unlabeled else LABELS[label]
        rows.append(
            {"id": f"{lang}-{split}-{i}", "text": text, "topic": topic, "label": None if unlabeled else topic}
        )
    return rows


def make_corpus(root: Path, docs_per_lang: int = 120, seed: int = 0, unlabeled_every: int = 0) -> Path:
    """Write the synthetic corpus under ``root`` (see the module docstring) and return ``root``.

    ``docs_per_lang`` training articles per language (`split_sizes` for the others). With
    ``unlabeled_every=n``, article ``i`` of every split with ``i % n == n - 1`` gets an unmapped
    topic and label null, as real articles outside the eight shared topics do. Deterministic in
    all arguments.
    """
    rng = random.Random(seed)
    for lang in ("en", "fr", "es"):
        for split, n in split_sizes(docs_per_lang).items():
            _write_jsonl(root / wiki_file(lang, split), _wiki_rows(rng, lang, split, n, unlabeled_every))
    languages = {}
    for lang, code in UDHR_CODES.items():
        for part in ("train", "heldout"):
            articles = [
                a for a in range(UDHR_ARTICLES) if (a in UDHR_HELDOUT_ARTICLES) == (part == "heldout")
            ]
            rows = [{"id": f"{code}:{a}", "article": a, "text": udhr_article_text(lang, a)} for a in articles]
            if part == "heldout":  # held-out rows list their paragraphs, as the builder writes them
                rows = [{**row, "paragraphs": udhr_paragraphs(lang, row["article"])} for row in rows]
            _write_jsonl(root / udhr_file(part, code), rows)
        languages[code] = {
            "bcp47": lang,
            "iso6393": code,
            "name": lang,
            "direction": "ltr",
            "script": SCRIPTS[code],
            "articles": UDHR_ARTICLES,
        }
    (root / UDHR_LANGUAGES_FILE).write_text(json.dumps(languages, indent=2))
    return root


def udhr_article_text(lang: str, article: int) -> str:
    """The text `make_corpus` writes for one UDHR article (the same in every corpus)."""
    return " ".join(udhr_paragraphs(lang, article))


def udhr_paragraphs(lang: str, article: int) -> list[str]:
    """The article's three paragraphs, one sentence each (`udhr_article_text` joins them)."""
    rng = random.Random(f"{article}:{lang}")
    return [_sentence(rng, lang, None, 12) for _ in range(3)]
