"""Readers for the task files users already have: labeled text, aligned parallel text, script tables.

Nothing is downloaded: the user puts the files on disk (docs/evaluation.md says where) and names
them in ``evaluate.tasks``. Every error is an `InputError` naming the file, and ``file:line`` for a
bad row, so a broken download is found before minutes of model time are spent.

Labeled text (`read_labeled`), the layout told by the file:

- ``.jsonl``: one object a line with ``text``, optionally ``text_pair``, and ``label`` (a string or
  an int; null = unlabeled, skipped). The demo corpus's ``wiki/<lang>/<split>.jsonl`` is this layout.
- a TSV file with a header row, recognised by its column names (`TSV_LAYOUTS`):

  - XNLI-1.0 ``xnli.dev.tsv`` / ``xnli.test.tsv``: ``language``, ``gold_label``, ``sentence1``,
    ``sentence2`` among its 19 columns; all 15 languages in one file, rows picked by ``language``.
  - MultiNLI 1.0 ``multinli_1.0_train.txt`` (also ``_dev_matched.txt``): ``gold_label``,
    ``sentence1``, ``sentence2`` among its 15 columns; rows whose ``gold_label`` is ``-`` (the
    annotators reached no consensus: there is no gold label) are skipped, in XNLI files too.
  - XNLI-MT-1.0 ``multinli/multinli.train.<lang>.tsv``: ``premise``, ``hypo``, ``label``; its label
    ``contradictory`` is read as ``contradiction``, the XNLI spelling (as Hugging Face transformers'
    ``XnliProcessor`` does), so a model trained on it is tested on XNLI's labels.
  - PAWS-X ``x-final/<lang>/{train,translated_train,dev_2k,test_2k}.tsv``: ``id``, ``sentence1``,
    ``sentence2``, ``label`` (``0``/``1``), as google-research-datasets/paws ``pawsx/`` ships them.

  Fields are split on tabs with no quote handling: these files contain bare ``"`` characters that a
  CSV reader would take for quoting (Hugging Face's readers use ``quoting=QUOTE_NONE`` for the same
  reason). A row with a different number of fields than the header is an error, not a skip.

Aligned text (`read_aligned`): ``.jsonl`` records keyed by an int ``article`` (records of one
article are joined with a newline; records that list their ``paragraphs``, as the demo's held-out
UDHR articles do, give one item per paragraph), or any other file as one item a line,
line i of one language aligned with line i of the other. Tatoeba is the latter, as LASER ships it
(``data/tatoeba/v1/tatoeba.<xxx>-eng.<xxx>`` and ``tatoeba.<xxx>-eng.eng``, ISO 639-3 codes) and as
XTREME's ``utils_preprocess.py`` copies it (``<xx>-en.<xx>`` and ``<xx>-en.en``): one sentence a line.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from megameta.data.demo.reader import read_articles, read_languages
from megameta.errors import InputError
from megameta.fileio import jsonl_rows, require_file

#: TSV layout name -> (columns it must have, in a header row; text column, pair column, label
#: column, language column or None). Checked in this order: XNLI's header contains MultiNLI's.
TSV_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, str, str, str | None]]] = {
    "XNLI-1.0": (("language", "gold_label", "sentence1", "sentence2"), ("sentence1", "sentence2", "gold_label", "language")),
    "MultiNLI": (("gold_label", "sentence1", "sentence2"), ("sentence1", "sentence2", "gold_label", None)),
    "XNLI-MT": (("premise", "hypo", "label"), ("premise", "hypo", "label", None)),
    "PAWS-X": (("id", "sentence1", "sentence2", "label"), ("sentence1", "sentence2", "label", None)),
}  # fmt: skip
#: Labels read as another label: XNLI-MT spells XNLI's ``contradiction`` as ``contradictory``.
LABEL_ALIASES = {"contradictory": "contradiction"}
#: A gold label that means "no label" (MultiNLI/XNLI: the annotators did not agree).
NO_LABEL = "-"


@dataclass(frozen=True)
class LabeledRow:
    """One labeled example: `pair` is the second sentence of a sentence-pair task, else None;
    `lang` is the row's ``language`` column when the file has one; `line` is 1-based."""

    text: str
    pair: str | None
    label: str
    lang: str | None
    line: int


def read_labeled(path: str | Path) -> list[LabeledRow]:
    """The labeled rows of a ``.jsonl`` or TSV file (see the module docstring), in file order."""
    path = require_file(path)
    rows = _read_labeled_jsonl(path) if path.name.endswith(".jsonl") else _read_labeled_tsv(path)
    if not rows:
        raise InputError(f"{path}: no labeled rows")
    return rows


def _read_labeled_jsonl(path: Path) -> list[LabeledRow]:
    rows = []
    for n, rec in jsonl_rows(path):
        label = rec.get("label")
        if label is None:
            continue
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise InputError(f"{path}:{n}: 'label' must be a string, an int or null, got {label!r}")
        text, pair = rec.get("text"), rec.get("text_pair")
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            raise InputError(f"{path}:{n}: needs a string 'text' (and 'text_pair', if any)")
        rows.append(LabeledRow(text, pair, str(label), None, n))
    return rows


def _read_labeled_tsv(path: Path) -> list[LabeledRow]:
    # utf-8-sig: a BOM left by a spreadsheet export must not rename the first column.
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        layout = next((k for k, (need, _) in TSV_LAYOUTS.items() if set(need) <= set(header)), None)
        if layout is None:
            known = "; ".join(f"{k}: {', '.join(need)}" for k, (need, _) in TSV_LAYOUTS.items())
            raise InputError(f"{path}:1: header {header} is no known layout (columns needed: {known})")
        cols = [None if c is None else header.index(c) for c in TSV_LAYOUTS[layout][1]]
        rows = []
        for n, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise InputError(
                    f"{path}:{n}: {len(fields)} tab-separated fields, the {layout} header has {len(header)}"
                )
            text, pair, label = (fields[c] for c in cols[:3])
            if label == NO_LABEL and layout in ("XNLI-1.0", "MultiNLI"):
                continue
            for name, value in (("label", label), ("text", text), ("second sentence", pair)):
                if not value.strip():
                    raise InputError(f"{path}:{n}: empty {name}")
            lang = None if cols[3] is None else fields[cols[3]]
            rows.append(LabeledRow(text, pair, LABEL_ALIASES.get(label, label), lang, n))
    return rows


def select_language(rows: list[LabeledRow], lang: str, path: str | Path) -> list[LabeledRow]:
    """The rows of `lang` when the file has a ``language`` column (XNLI), else all rows."""
    if not rows or rows[0].lang is None:
        return rows
    picked = [r for r in rows if r.lang == lang]
    if not picked:
        langs = sorted({r.lang for r in rows if r.lang})
        raise InputError(f"{path}: no rows with language {lang!r} (the file has {langs})")
    return picked


def read_aligned(path: str | Path) -> dict[Hashable, str]:
    """Item key -> text: line i (0-based) -> line i, or a ``.jsonl`` file's records by ``article``;
    records with a ``paragraphs`` list give one item per paragraph (`read_paragraph_items`)."""
    path = require_file(path)
    if is_line_aligned(path):
        with open(path, encoding="utf-8") as f:
            return {i: line.rstrip("\r\n") for i, line in enumerate(f)}
    rows = list(jsonl_rows(path))
    with_paragraphs = [n for n, row in rows if "paragraphs" in row]
    if not with_paragraphs:
        return read_articles(path)
    if len(with_paragraphs) < len(rows):
        line = next(n for n, row in rows if "paragraphs" not in row)
        raise InputError(f"{path}:{line}: no 'paragraphs' list, which the file's other records have")
    return read_paragraph_items(path, rows)


def read_paragraph_items(path: str | Path, rows: list[tuple[int, dict]]) -> dict[Hashable, str]:
    """``(article, paragraphs in it, i) -> paragraph i`` of JSON-lines records with an int ``article``
    and a ``paragraphs`` list of strings (the demo's held-out UDHR layout). The paragraph count is in
    the key, so paragraph i of an article is matched only with a translation that splits the article
    into as many paragraphs (the same clause). Raises InputError naming ``path:line`` for a bad record
    and for an article listed twice."""
    items: dict[Hashable, str] = {}
    seen: set[int] = set()
    for n, row in rows:
        art, paragraphs = row.get("article"), row.get("paragraphs")
        if not isinstance(art, int) or isinstance(art, bool) or not isinstance(paragraphs, list):
            raise InputError(f"{path}:{n}: needs an int 'article' and a 'paragraphs' list")
        if not paragraphs or not all(isinstance(p, str) and p.strip() for p in paragraphs):
            raise InputError(f"{path}:{n}: 'paragraphs' must be non-empty strings")
        if art in seen:
            raise InputError(f"{path}:{n}: article {art} is listed twice")
        seen.add(art)
        items.update({(art, len(paragraphs), i): text for i, text in enumerate(paragraphs)})
    return items


def is_line_aligned(path: str | Path) -> bool:
    """Whether `read_aligned` keys `path` by line number (every file but ``.jsonl``)."""
    return not str(path).endswith(".jsonl")


def read_scripts(path: str | Path) -> dict[str, str]:
    """Language -> script from a JSON object language -> {"script": ...} (UDHR ``languages.json``)."""
    table = read_languages(path)
    return {k: str(v["script"]) for k, v in table.items() if isinstance(v, dict) and v.get("script")}
