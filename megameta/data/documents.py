"""One (language, split)'s document stream: sources read in order, deduplicated, long documents split.

The stream is a pure function of the sources and the settings, so every process that
reads it (a single-machine run, any piece of a many-machine run, a resumed run) numbers
the documents identically; preprocessing cuts that numbering into parts.

Order of operations: read (:func:`megameta.data.readers.iter_documents`) -> exact
deduplication (optional) -> long-document splitting. Deduplication keeps the first
occurrence of each normalized text (:func:`normalized_hash`) within the stream and
counts the others as ``duplicate document``; its memory is one 64-bit hash per
distinct document held in a Python set (about 60-70 bytes each: ~1.3 GB per 20
million distinct documents).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator

from megameta.data.readers import ReadStats, iter_documents, iter_records, record_documents, record_kind

MAX_DOC_CHARS = 200_000


def normalized_hash(doc: str) -> int:
    """64-bit hash of ``doc`` with case folded and whitespace runs collapsed to one space."""
    norm = " ".join(doc.split()).casefold().encode("utf-8", errors="surrogatepass")
    return int.from_bytes(hashlib.blake2b(norm, digest_size=8).digest(), "little")


def _dedup(docs: Iterator[str], stats: ReadStats) -> Iterator[str]:
    seen: set[int] = set()
    for doc in docs:
        h = normalized_hash(doc)
        if h in seen:
            stats.skipped["duplicate document"] += 1
            continue
        seen.add(h)
        yield doc


def split_long(docs: Iterator[str], stats: ReadStats) -> Iterator[str]:
    """Documents over ``MAX_DOC_CHARS`` characters as pieces, cut at a space near the limit when possible."""
    for doc in docs:
        if len(doc) <= MAX_DOC_CHARS:
            yield doc
            continue
        stats.skipped["long document split"] += 1
        while len(doc) > MAX_DOC_CHARS:
            cut = doc.rfind(" ", MAX_DOC_CHARS - 1000, MAX_DOC_CHARS)
            cut = cut if cut > 0 else MAX_DOC_CHARS
            piece, doc = doc[:cut].strip(), doc[cut:].lstrip()
            if piece:
                yield piece
        if doc:
            yield doc


def document_stream(
    files: list[str], text_field: str, fmt: str, dedup: bool, stats: ReadStats
) -> Iterator[str]:
    """The numbered documents of one (language, split); ``stats`` collects what was skipped and why."""
    docs = itertools.chain.from_iterable(iter_documents(s, text_field, stats, fmt) for s in files)
    return split_long(_dedup(docs, stats) if dedup else docs, stats)


def record_batches(
    files: list[str], fmt: str, dedup: bool, stats: ReadStats, max_records: int, max_bytes: int
) -> Iterator[tuple[str, list[bytes]]] | None:
    """The same stream as raw records, for the tokenizer workers to turn into documents; or None.

    Yields (kind, records) with at most ``max_records`` records, ending the batch once it
    reaches ``max_bytes``, never across files. :func:`batch_documents` of the batches in order
    is :func:`document_stream`. None when a file is parquet or ``hf:`` or ``dedup`` is on
    (deduplication needs every earlier document, so it stays with the reading process).
    """
    kinds = [record_kind(s) for s in files]
    if dedup or None in kinds:
        return None

    def batches() -> Iterator[tuple[str, list[bytes]]]:
        for source, kind in zip(files, kinds, strict=True):
            batch, size = [], 0
            for raw in iter_records(source, stats, fmt):
                batch.append(raw)
                size += len(raw)
                if len(batch) == max_records or size >= max_bytes:
                    yield kind, batch
                    batch, size = [], 0
            if batch:
                yield kind, batch

    return batches()


def batch_documents(kind: str, records: list[bytes], text_field: str, stats: ReadStats) -> list[str]:
    """The documents of one of :func:`record_batches`' batches (long ones split)."""
    return list(split_long(record_documents(records, kind, text_field, stats), stats))
