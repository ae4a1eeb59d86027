"""Streaming document readers: plain text, JSON lines, parquet, Hugging Face datasets.

Every reader yields one document (a string) at a time and never holds a file
in memory. Bad records are counted in a :class:`ReadStats`, never silently
dropped and never fatal: invalid UTF-8 is decoded with U+FFFD replacement,
empty documents and unparsable JSON lines are skipped and counted.

Source strings:
  ``path/to/file.txt``      one document per line
  ``path/to/file.jsonl``    one JSON object per line, text in ``text_field``
  ``path/to/file.parquet``  a column named ``text_field``
  ``hf:NAME[:CONFIG][:SPLIT]`` a Hugging Face dataset (local dir or hub name), streamed
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from megameta.errors import InputError

FORMATS = (".txt", ".jsonl", ".json", ".parquet")


@dataclass
class ReadStats:
    """What a reader saw: documents yielded and lines skipped, by reason."""

    docs: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    replaced_utf8: int = 0

    def merge(self, other: ReadStats) -> None:
        self.docs += other.docs
        self.bytes += other.bytes
        self.skipped.update(other.skipped)
        self.replaced_utf8 += other.replaced_utf8


def check_source(source: str) -> None:
    """Raise InputError naming ``source`` if it cannot be read."""
    if source.startswith("hf:"):
        return
    path = Path(source)
    if not path.exists():
        raise InputError(f"corpus file not found: {path}")
    if not path.is_file():
        raise InputError(f"corpus path is not a file: {path}")
    if path.suffix not in FORMATS:
        raise InputError(
            f"{path}: unknown corpus format '{path.suffix}' (expected one of {', '.join(FORMATS)})"
        )
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"cannot read corpus file {path}: {e.strerror}") from None


def iter_documents(source: str, text_field: str = "text", stats: ReadStats | None = None) -> Iterator[str]:
    """Yield non-empty documents from ``source`` (see module docstring for formats)."""
    check_source(source)
    stats = stats if stats is not None else ReadStats()
    if source.startswith("hf:"):
        yield from _iter_hf(source, text_field, stats)
        return
    path = Path(source)
    if path.suffix == ".parquet":
        yield from _iter_parquet(path, text_field, stats)
        return
    is_json = path.suffix in (".jsonl", ".json")
    with open(path, "rb") as f:
        for raw in f:
            text = raw.decode("utf-8", errors="replace")
            if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
                stats.replaced_utf8 += 1
            if is_json:
                if not text.strip():
                    stats.skipped["empty line"] += 1
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    stats.skipped["invalid JSON"] += 1
                    continue
                value = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(value, str):
                    stats.skipped[f"no '{text_field}' string"] += 1
                    continue
                text = value
            text = text.strip()
            if not text:
                stats.skipped["empty document"] += 1
                continue
            stats.docs += 1
            stats.bytes += len(raw)
            yield text


def _iter_parquet(path: Path, text_field: str, stats: ReadStats) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    if text_field not in pf.schema_arrow.names:
        raise InputError(f"{path}: no column '{text_field}' (columns: {', '.join(pf.schema_arrow.names)})")
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if not isinstance(value, str) or not value.strip():
                stats.skipped["empty document"] += 1
                continue
            stats.docs += 1
            stats.bytes += len(value.encode("utf-8"))
            yield value.strip()


def _iter_hf(source: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    import datasets

    parts = source[3:].split(":")
    name, config, split = (
        parts[0],
        (parts[1] if len(parts) > 1 and parts[1] else None),
        (parts[2] if len(parts) > 2 else "train"),
    )
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # the datasets library raises many types; the user needs the message
        raise InputError(f"cannot open Hugging Face dataset '{source}': {e}") from None
    for record in ds:
        value = record.get(text_field)
        if not isinstance(value, str) or not value.strip():
            stats.skipped["empty document"] += 1
            continue
        stats.docs += 1
        stats.bytes += len(value.encode("utf-8"))
        yield value.strip()
