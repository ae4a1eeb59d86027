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

from megameta.data.readers import ReadStats, iter_documents

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
