"""Streaming document readers: plain text, JSON lines, parquet, Hugging Face datasets.

Text and JSON-lines files may be compressed (``.gz``, ``.xz``, ``.bz2``, ``.zst``,
see :mod:`megameta.data.compressed`): they are decompressed as streams.

Every reader yields one document (a string) at a time and never holds more than
one bounded line of a file in memory. Bad records are counted in a
:class:`ReadStats` by reason, never silently dropped and never fatal:

* invalid UTF-8 is decoded with U+FFFD replacement and the line is counted
  (``replaced_utf8``); the document is kept;
* empty lines, whitespace-only documents and empty files are skipped and counted
  (``empty line``, ``empty document``, ``empty file``);
* JSON lines that do not parse, or lack a string ``text_field``, are skipped and
  counted (``invalid JSON``, ``no 'text' string``); an unpaired surrogate escape in the
  text (``"\\ud800"``, valid JSON but no Unicode character, so no UTF-8 encoder, the
  tokenizer's included, accepts it) becomes U+FFFD and is counted (``lone surrogate
  replaced``); the document is kept;
* a plain-text line longer than ``MAX_LINE_BYTES`` is split into pieces of at most
  that many bytes at UTF-8 character boundaries (``long line split``; each piece is
  a document); a JSON line longer than ``MAX_JSON_LINE_BYTES`` cannot be parsed
  in pieces and is skipped without being held in memory (``JSON line too long``).

Unreadable or missing paths raise :class:`InputError` naming the path (exit code 2).

Plain text has two layouts (``fmt``): ``lines``, one document per line, and
``paragraphs`` (CC-100's layout), one paragraph per line and documents separated
by blank lines; a paragraph document is its lines joined with ``\n``. A paragraph
document that grows past ``MAX_PARAGRAPH_DOC_BYTES`` without a blank line is cut
between lines (``long document cut``), so memory stays bounded.

Source strings:
  ``path/to/file.txt``      plain text (``fmt`` above); ``.txt.gz``/``.xz``/``.bz2``/``.zst`` too
  ``path/to/file.jsonl``    one JSON object per line, text in ``text_field`` (compressed too)
  ``path/to/file.parquet``  a column named ``text_field``
  ``hf:NAME[:CONFIG][:SPLIT]`` a Hugging Face dataset, streamed: a hub name, a local
                            dataset dir / data files dir, or a ``save_to_disk`` dir
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from megameta.data.compressed import CODECS, check_codec_available, open_source, split_codec
from megameta.errors import InputError

try:
    import orjson
except ImportError:  # a dependency; without it the standard library parses every line (slower)
    orjson = None

FORMATS = (".txt", ".jsonl", ".json", ".parquet")
TEXT_LAYOUTS = ("lines", "paragraphs")
MAX_LINE_BYTES = 1 << 20
MAX_JSON_LINE_BYTES = 64 << 20
MAX_PARAGRAPH_DOC_BYTES = 4 << 20
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a str holds a surrogate only when it is unpaired


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
        name = source[3:].split(":")[0]
        if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
            raise InputError(f"Hugging Face dataset path not found: {name} (in source '{source}')")
        return
    path = Path(source)
    if not path.exists():
        raise InputError(f"corpus file not found: {path}")
    if not path.is_file():
        raise InputError(f"corpus path is not a file: {path}")
    inner, codec = split_codec(path)
    if inner not in FORMATS or (codec and inner == ".parquet"):
        raise InputError(
            f"{path}: unknown corpus format '{''.join(path.suffixes[-2:]) if codec else path.suffix}' "
            f"(expected one of {', '.join(FORMATS)}; text and JSON lines may end in {', '.join(CODECS)})"
        )
    check_codec_available(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"cannot read corpus file {path}: {e.strerror}") from None


def record_kind(source: str) -> str | None:
    """``"json"`` or ``"text"`` for a file read as raw records (:func:`iter_records`), else None.

    Parquet and ``hf:`` sources are read as documents only.
    """
    if source.startswith("hf:"):
        return None
    inner = split_codec(Path(source))[0]
    return None if inner == ".parquet" else "json" if inner in (".jsonl", ".json") else "text"


def iter_documents(
    source: str, text_field: str = "text", stats: ReadStats | None = None, fmt: str = "lines"
) -> Iterator[str]:
    """Yield non-empty documents from ``source`` (see module docstring for formats).

    ``fmt`` is the plain-text layout (``lines`` or ``paragraphs``); other formats ignore it.
    Text and JSON lines are :func:`iter_records` turned into documents by :func:`record_document`
    (so the tokenizer workers, which do that second step on batches of records, read the same).
    """
    check_source(source)
    if fmt not in TEXT_LAYOUTS:
        raise InputError(f"unknown text layout {fmt!r} (expected one of {', '.join(TEXT_LAYOUTS)})")
    stats = stats if stats is not None else ReadStats()
    kind = record_kind(source)
    if kind is not None:
        yield from record_documents(iter_records(source, stats, fmt), kind, text_field, stats)
    elif source.startswith("hf:"):
        yield from _iter_hf(source, text_field, stats)
    else:
        yield from _iter_parquet(Path(source), text_field, stats)


def iter_records(source: str, stats: ReadStats, fmt: str = "lines") -> Iterator[bytes]:
    """The raw records of a text or JSON-lines file (``record_kind`` not None), as bytes.

    A record is a line (one-document-per-line text, JSON lines; an over-long text line comes
    as pieces) or a paragraph document's lines joined (``fmt="paragraphs"``). What can be
    decided on the bytes is counted here (empty lines and files, long lines split, JSON lines
    too long, long documents cut); everything else by :func:`record_document`.
    """
    path = Path(source)
    if record_kind(source) == "json":
        yield from _json_records(path, stats)
    elif fmt == "paragraphs":
        yield from _paragraph_records(path, stats)
    else:
        yield from _line_records(path, stats)


def record_document(raw: bytes, kind: str, text_field: str, stats: ReadStats) -> str | None:
    """The document of one raw record of ``kind`` (``"json"`` or ``"text"``), or None (counted)."""
    if kind == "text":
        return _emit(_decode(raw, stats), len(raw), stats)
    try:
        record, maybe_surrogates = _json_loads(raw, stats)
    except json.JSONDecodeError:
        stats.skipped["invalid JSON"] += 1
        return None
    value = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(value, str):
        stats.skipped[f"no '{text_field}' string"] += 1
        return None
    if maybe_surrogates and _LONE_SURROGATE.search(value):
        value = _LONE_SURROGATE.sub("\ufffd", value)
        stats.skipped["lone surrogate replaced"] += 1
    return _emit(value, len(raw), stats)


def record_documents(records: Iterable[bytes], kind: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    """:func:`record_document` of each record, the Nones left out."""
    for raw in records:
        if (doc := record_document(raw, kind, text_field, stats)) is not None:
            yield doc


def _emit(text: str, nbytes: int, stats: ReadStats) -> str | None:
    """``text`` stripped and counted, or None (counted as an empty document)."""
    text = text.strip()
    if not text:
        stats.skipped["empty document"] += 1
        return None
    stats.docs += 1
    stats.bytes += nbytes
    return text


def _decode(raw: bytes, stats: ReadStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.replaced_utf8 += 1
        return raw.decode("utf-8", errors="replace")


def _raw_lines(f, stats: ReadStats) -> Iterator[bytes]:
    """Lines of ``f`` as bytes; a line over ``MAX_LINE_BYTES`` comes as pieces cut at UTF-8 boundaries.

    A piece has no trailing newline (only a line's last piece does), so joining consecutive
    pieces gives the line back.
    """
    carry = b""  # an incomplete UTF-8 character cut off at a long-line split
    seen_any = False
    while True:
        raw = f.readline(MAX_LINE_BYTES)
        if not raw:
            break
        seen_any = True
        raw = carry + raw
        carry = b""
        if not raw.endswith(b"\n") and len(raw) >= MAX_LINE_BYTES:
            # A piece of an over-long line: cut at a character boundary, keep the rest for the next piece.
            cut = len(raw)
            while cut > len(raw) - 4 and cut > 0 and (raw[cut - 1] & 0xC0) == 0x80:
                cut -= 1
            if cut > 0 and raw[cut - 1] >= 0xC0:
                cut -= 1
            if cut > 0:
                raw, carry = raw[:cut], raw[cut:]
            stats.skipped["long line split"] += 1
        yield raw
    if carry:
        yield carry
    if not seen_any:
        stats.skipped["empty file"] += 1


def _line_records(path: Path, stats: ReadStats) -> Iterator[bytes]:
    with open_source(path) as f:
        for raw in _raw_lines(f, stats):
            if not raw.strip():
                stats.skipped["empty line"] += 1
                continue
            yield raw


def _paragraph_records(path: Path, stats: ReadStats) -> Iterator[bytes]:
    """CC-100's layout: blank lines end documents; a document's lines are joined with newlines."""
    with open_source(path) as f:
        doc: list[bytes] = []
        size = 0
        for raw in _raw_lines(f, stats):
            blank = not raw.strip()
            if not blank:
                doc.append(raw)
                size += len(raw)
            if doc and (blank or size >= MAX_PARAGRAPH_DOC_BYTES):
                if not blank:  # no blank line in sight: cut between lines so memory stays bounded
                    stats.skipped["long document cut"] += 1
                yield b"".join(doc)
                doc, size = [], 0
        if doc:
            yield b"".join(doc)


def _json_loads(raw: bytes, stats: ReadStats) -> tuple[object, bool]:
    """One JSON line, parsed as ``json.loads`` parses it (raises ``json.JSONDecodeError``).

    Returns (the value, whether its strings may hold lone surrogates). orjson parses valid
    UTF-8 RFC 8259 JSON 2.7x faster and refuses lone surrogate escapes; whatever it refuses
    (invalid UTF-8, ``NaN``, lone surrogates, numbers out of float range) goes to the standard
    library, which decides as before. Where both parse a line their strings are equal
    (``tests/data/test_readers.py``).
    """
    if orjson is not None:
        try:
            return orjson.loads(raw), False
        except orjson.JSONDecodeError:
            pass
    return json.loads(_decode(raw, stats)), True


def _json_records(path: Path, stats: ReadStats) -> Iterator[bytes]:
    with open_source(path) as f:
        seen_any = False
        while True:
            raw = f.readline(MAX_JSON_LINE_BYTES)
            if not raw:
                break
            seen_any = True
            if not raw.endswith(b"\n") and len(raw) >= MAX_JSON_LINE_BYTES:
                while raw and not raw.endswith(b"\n"):  # drain the rest of the line, piece by piece
                    raw = f.readline(MAX_JSON_LINE_BYTES)
                stats.skipped["JSON line too long"] += 1
                continue
            if not raw.strip():
                stats.skipped["empty line"] += 1
                continue
            yield raw
        if not seen_any:
            stats.skipped["empty file"] += 1


def _iter_parquet(path: Path, text_field: str, stats: ReadStats) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    if text_field not in pf.schema_arrow.names:
        raise InputError(f"{path}: no column '{text_field}' (columns: {', '.join(pf.schema_arrow.names)})")
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        yield from _documents(batch.column(0).to_pylist(), stats)


def _iter_hf(source: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    import datasets

    parts = source[3:].split(":")
    name, config, split = (
        parts[0],
        (parts[1] if len(parts) > 1 and parts[1] else None),
        (parts[2] if len(parts) > 2 else "train"),
    )
    try:
        if not config and any((Path(name) / f).exists() for f in ("state.json", "dataset_dict.json")):
            # a `save_to_disk` dir (one split) or DatasetDict dir: read Arrow files lazily (memory-mapped)
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
            ds = ds.to_iterable_dataset()
        else:
            ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # the datasets library raises many types; the user needs the message
        raise InputError(f"cannot open Hugging Face dataset '{source}': {e}") from None
    yield from _documents((record.get(text_field) for record in ds), stats)


def _documents(values: Iterable[object], stats: ReadStats) -> Iterator[str]:
    """The non-empty text values of a column, stripped; anything else is counted as an empty document."""
    for value in values:
        if not isinstance(value, str) or not value.strip():
            stats.skipped["empty document"] += 1
            continue
        stats.docs += 1
        stats.bytes += len(value.encode("utf-8"))
        yield value.strip()
