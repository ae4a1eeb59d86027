"""The one reader of the demo corpus layout (see :mod:`.sources`), used by evaluation and tests.

Every function takes the corpus dir and names the files it reads through :mod:`.sources`, so the
layout is spelled once. Missing or malformed files raise :class:`InputError` naming the file
(and the line or record), which the CLI turns into exit code 2. Order is file order throughout:
two calls on the same corpus return the same documents in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from megameta.data.demo.sources import LABELS, UDHR_LANGUAGES_FILE, udhr_file, wiki_file
from megameta.errors import InputError
from megameta.fileio import jsonl_rows, require_file


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-empty line of a JSON-lines file (`megameta.fileio.jsonl_rows`).

    Raises InputError naming the file when it is missing, and ``path:line`` for a line that is
    not a JSON object.
    """
    return (row for _, row in jsonl_rows(path))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` one JSON object a line (UTF-8, ``\\n`` endings), creating parent dirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_labeled(corpus_dir: str | Path, lang: str, split: str) -> list[tuple[str, int]]:
    """``(text, index into LABELS)`` for the labeled articles of ``wiki/<lang>/<split>.jsonl``.

    Articles whose label is null (topics outside the eight shared ones) are left out. Raises
    InputError naming the file when it is missing, has no labeled article, or a record has a
    label outside :data:`LABELS` or no string ``text``.
    """
    path = Path(corpus_dir) / wiki_file(lang, split)
    index = {label: i for i, label in enumerate(LABELS)}
    out: list[tuple[str, int]] = []
    for n, row in enumerate(read_jsonl(path), 1):
        label = row.get("label")
        if label is None:
            continue
        if label not in index:
            raise InputError(f"{path}: record {n} has label {label!r}, not one of {list(LABELS)}")
        if not isinstance(row.get("text"), str):
            raise InputError(f"{path}: record {n} has no string 'text' field")
        out.append((row["text"], index[label]))
    if not out:
        raise InputError(f"{path}: no labeled records")
    return out


def read_articles(path: str | Path) -> dict[int, str]:
    """``{article number: text}`` of a JSON-lines file of ``{"article": int, "text": str}`` records (the
    UDHR layout), by article number; records of the same article are joined with a newline. Raises
    InputError naming the file when it is missing and ``path:line`` for a record without an int
    ``article`` and a string ``text``."""
    articles: dict[int, list[str]] = {}
    for n, row in jsonl_rows(path):
        art, text = row.get("article"), row.get("text")
        if not isinstance(art, int) or isinstance(art, bool) or not isinstance(text, str):
            raise InputError(f"{path}:{n}: needs an int 'article' and a string 'text'")
        articles.setdefault(art, []).append(text)
    return {art: "\n".join(parts) for art, parts in sorted(articles.items())}


def load_udhr_heldout(corpus_dir: str | Path, code: str) -> dict[int, str]:
    """`read_articles` of ``udhr/heldout/<code>.jsonl``."""
    return read_articles(Path(corpus_dir) / udhr_file("heldout", code))


def read_languages(path: str | Path) -> dict[str, dict[str, Any]]:
    """A JSON object of languages (the layout of ``udhr/languages.json``). Raises InputError naming the
    file when it is missing or not a JSON object."""
    path = require_file(path)
    try:
        languages = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(languages, dict):
        raise InputError(f"{path}: expected a JSON object of languages")
    return languages


def load_udhr_languages(corpus_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``udhr/languages.json`` (`read_languages`): code -> {bcp47, iso6393, name, direction, script,
    articles}."""
    return read_languages(Path(corpus_dir) / UDHR_LANGUAGES_FILE)


def udhr_scripts(corpus_dir: str | Path, codes: list[str]) -> dict[str, str]:
    """code -> dominant script from ``udhr/languages.json``; codes it does not list get ``"unknown"``."""
    languages = load_udhr_languages(corpus_dir)
    return {c: str((languages.get(c) or {}).get("script") or "unknown") for c in codes}


def load_documents(path: str | Path, max_docs: int) -> list[str]:
    """Up to ``max_docs`` non-empty documents of a held-out file, in file order.

    A ``.jsonl`` file gives each record's ``text`` field (the corpus layout; InputError naming the
    record when it has none); any other file gives one document per non-empty line, without its
    newline. Raises InputError naming the file when it is missing.
    """
    path = Path(path)
    docs: list[str] = []
    if str(path).endswith(".jsonl"):
        for n, row in enumerate(read_jsonl(path), 1):
            text = row.get("text")
            if not isinstance(text, str):
                raise InputError(f"{path}: record {n} has no string 'text' field")
            if text.strip():
                docs.append(text)
            if len(docs) >= max_docs:
                break
        return docs
    with open(require_file(path), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                docs.append(line.rstrip("\n"))
            if len(docs) >= max_docs:
                break
    return docs
