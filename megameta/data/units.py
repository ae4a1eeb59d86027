"""One (language, split) of preprocessing: its document stream cut into parts, the parts into one shard.

Documents (numbered by :func:`megameta.data.documents.document_stream`) are cut into
*parts* of ``part_docs`` documents; part k holds documents ``[k * part_docs, (k + 1) *
part_docs)``. Each finished part is committed atomically as a small shard
``<lang>/<split>.parts/NNNNNN.bin/.idx``. A run tokenizes the parts it owns that are
not committed yet, reading (not tokenizing) the documents of the others:

* piece ``i`` of ``n`` (``n > 1``) works on the units that :func:`piece_owners` gives it
  (by source bytes, so a piece reads only about 1/n of the corpus plus the units it
  shares) and, in a unit shared by pieces ``owners``, owns the parts ``k`` with
  ``owners[k % len(owners)] == i`` (interleaved, so the sharing pieces get equal work
  without knowing the unit's document count in advance); it stops after committing them;
* a full run (``n == 1``) owns every part: it tokenizes whatever is missing, then
  concatenates the parts into ``<lang>/<split>.bin/.idx``, writes
  ``<split>.done.json`` (sources with size and sha256, settings, counts) and removes
  the parts.

Who reads the documents: a run that tokenizes every part of the unit (a fresh full run,
or a piece alone on its unit) with no deduplication hands batches of raw records (lines,
paragraph documents) to the tokenizer workers, which decode, parse and split them
themselves (:func:`megameta.data.documents.record_batches`); the reading process only
frames records and writes results, so it keeps up with many workers. A run that skips
parts must know where each document falls, so it reads the documents itself and sends
batches of documents. Both read with the same functions.

Parts are the same bytes whichever process made them, so the final shard does not
depend on the piece count, the order the pieces ran in, or kills and reruns.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from megameta.data import documents
from megameta.data.documents import document_stream, record_batches
from megameta.data.encode import Tokenizers
from megameta.data.readers import MAX_JSON_LINE_BYTES, MAX_LINE_BYTES, ReadStats
from megameta.data.shards import FORMAT_VERSION, ShardWriter, TokenShard, concatenate
from megameta.errors import InputError, MegaMetaError
from megameta.fileio import sha256_file, write_atomic

# A batch (the unit sent to a worker) ends at BATCH_DOCS documents or BATCH_CHARS characters (raw
# records: that many records or bytes); at most READ_AHEAD * workers + 1 batches are in flight, so
# memory does not grow with the input.
BATCH_DOCS = 2048
BATCH_CHARS = 1 << 20
READ_AHEAD = 2
PART_DOCS = 16_384
# Test hook: seconds to sleep after committing each part (lets a test kill the run mid-unit).
PART_DELAY_ENV = "MEGAMETA_PREPROCESS_PART_DELAY"
# What decides a unit's output bytes besides its sources; a record that differs in any rebuilds it.
SETTING_KEYS = (
    "vocab_hash",
    "text_field",
    "format",
    "dedup",
    "shard_format",
    "max_doc_chars",
    "max_line_bytes",
    "max_json_line_bytes",
)


def settings(text_field: str, vhash: str, fmt: str = "lines", dedup: bool = False) -> dict:
    """Everything besides the sources that decides a unit's output bytes (keys: ``SETTING_KEYS``)."""
    return {
        "vocab_hash": vhash,
        "text_field": text_field,
        "format": fmt,
        "dedup": dedup,
        "shard_format": FORMAT_VERSION,
        "max_doc_chars": documents.MAX_DOC_CHARS,
        "max_line_bytes": MAX_LINE_BYTES,
        "max_json_line_bytes": MAX_JSON_LINE_BYTES,
    }


def file_digest(path: str | Path, prior: dict | None = None) -> dict:
    """size, mtime and sha256 of a source file (streamed); reuses ``prior``'s hash if size and mtime match."""
    st = os.stat(path)
    if prior and prior.get("size") == st.st_size and prior.get("mtime_ns") == st.st_mtime_ns:
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": prior["sha256"]}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def _same_inputs(a: dict, b: dict) -> bool:
    def strip(s):
        return [{k: v for k, v in x.items() if k != "mtime_ns"} for x in s]

    return all(a.get(k) == b.get(k) for k in SETTING_KEYS) and strip(a.get("sources", [])) == strip(
        b.get("sources", [])
    )


def piece_owners(weights: list[int], num: int) -> list[list[int]]:
    """For units of ``weights`` (source bytes) in order, the pieces (of ``num``) that share each one.

    Lay the units end to end on a line of length ``sum(weights)`` and cut it into ``num`` equal
    pieces; a unit goes to every piece its segment overlaps. A piece therefore reads about
    ``1/num`` of the bytes plus at most two partly shared units, and a unit larger than
    ``1/num`` of the corpus is shared by several pieces. Pure integer arithmetic: every machine
    computes the same answer from the same file sizes.
    """
    total = sum(weights)
    if total == 0:
        return [[u % num] for u in range(len(weights))]
    owners, start = [], 0
    for w in weights:
        end = start + w
        first = min(start * num // total, num - 1)
        last = max(first, -(-end * num // total) - 1)  # the last piece whose interval starts before `end`
        owners.append(list(range(first, min(last, num - 1) + 1)))
        start = end
    return owners


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _valid_shard(path: Path) -> TokenShard | None:
    try:
        return TokenShard(path)
    except (InputError, OSError, ValueError):  # missing, torn or truncated
        return None


class Unit:
    """One (language, split): parts under ``<split>.parts/``, then the final ``.bin/.idx``."""

    def __init__(self, base: Path, files: list[str], settings: dict, dtype: np.dtype, eos_id: int):
        self.base, self.files, self.dtype, self.eos_id = base, files, dtype, eos_id
        self.name = f"{base.parent.name}/{base.name}"
        self.done_path = base.with_name(base.name + ".done.json")
        self.parts_dir = base.with_name(base.name + ".parts")
        prior = read_json(self.done_path) or read_json(self.parts_dir / "unit.json") or {}
        prior_src = {s["path"]: s for s in prior.get("sources", []) if "sha256" in s}
        self.record = {
            "sources": [
                {"path": s} if s.startswith("hf:") else file_digest(s, prior_src.get(str(s))) for s in files
            ],
            **settings,
        }

    def up_to_date(self) -> dict | None:
        """The done record when the final shard exists and was made from these inputs."""
        done = read_json(self.done_path)
        if done and _same_inputs(done, self.record) and _valid_shard(self.base) is not None:
            return done
        return None

    @property
    def source_bytes(self) -> int:
        """Size of the unit's files (``hf:`` sources count 0): the weight that spreads units over pieces."""
        return sum(s.get("size", 0) for s in self.record["sources"])

    def run(
        self,
        pool: Tokenizers,
        part_docs: int,
        progress: bool,
        index: int = 0,
        owners: list[int] | None = None,
    ) -> dict:
        """Tokenize this run's missing parts; a full run (``owners`` None) also finishes the unit.

        A piece run is piece ``index`` of the pieces ``owners`` that share this unit; part k is
        dealt to ``owners[k % len(owners)]``. Returns the done record (full run) or
        ``{"parts": committed, "tokenized": by this run}`` (piece).
        """
        full = owners is None
        done = self.up_to_date()
        if done:
            if full:
                shutil.rmtree(self.parts_dir, ignore_errors=True)
            if progress:
                tqdm.write(f"[preprocess] {self.name}: up to date, skipped")
            return done
        start = time.time()
        finished = self._prepare_parts(part_docs, cleanup=full)
        if finished and progress:
            tqdm.write(f"[preprocess] {self.name}: resuming after {len(finished)} finished part(s)")
        stats = ReadStats()
        text, fmt, dedup = self.record["text_field"], self.record["format"], self.record["dedup"]
        owners = owners or [0]
        records = None
        if not finished and len(owners) == 1:  # every part to tokenize: the workers may read the records
            records = record_batches(self.files, fmt, dedup, stats, BATCH_DOCS, BATCH_CHARS)
        read = [0]
        if records is not None:
            jobs = ((None, (kind, text, batch)) for kind, batch in records)
        else:  # this process reads the documents, to skip those of parts it does not tokenize
            docs = document_stream(self.files, text, fmt, dedup, stats)
            jobs = self._document_jobs(docs, finished, part_docs, (index, owners), read)
        written, tokenized = self._tokenize(jobs, pool, stats, part_docs, progress)
        n_docs = written if records is not None else read[0]
        if not full:
            return {"parts": len(finished) + tokenized, "tokenized": tokenized}
        n_docs, n_tokens = self._concatenate(n_docs, part_docs)
        entry = {
            **self.record,
            "docs": n_docs,
            "tokens": n_tokens,
            "bytes": stats.bytes,
            "skipped": dict(sorted(stats.skipped.items())),  # the same whichever process counted what
            "replaced_utf8_lines": stats.replaced_utf8,
        }
        write_atomic(self.done_path, json.dumps(entry, indent=2))
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        if progress:
            tqdm.write(f"[preprocess] {self.name}: {n_docs:,} documents in {time.time() - start:.1f}s")
        return entry

    def _part(self, k: int) -> Path:
        return self.parts_dir / f"{k:06d}"

    def _prepare_parts(self, part_docs: int, cleanup: bool) -> set[int]:
        """Keep the committed parts of a run with the same inputs; returns their numbers.

        ``cleanup`` (full runs only) removes temporary files of killed writers; a piece leaves them,
        as another piece may be writing its own right now.
        """
        meta = {**self.record, "part_docs": part_docs}
        old = read_json(self.parts_dir / "unit.json")
        if old is not None and (not _same_inputs(old, meta) or old.get("part_docs") != part_docs):
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        if old != meta:
            write_atomic(self.parts_dir / "unit.json", json.dumps(meta, indent=2))
        if cleanup:
            for tmp in [*self.parts_dir.glob("*.tmp"), *self.parts_dir.glob(".*.tmp-*")]:
                tmp.unlink(missing_ok=True)
        finished = set()
        for idx in self.parts_dir.glob("[0-9]*.idx"):
            k = int(idx.stem)
            if _valid_shard(self._part(k)) is not None:
                finished.add(k)
            elif cleanup:  # a torn pair: redo it
                idx.unlink(missing_ok=True)
        return finished

    @staticmethod
    def _document_jobs(
        docs: Iterator[str], finished: set[int], part_docs: int, piece: tuple[int, list[int]], read: list[int]
    ) -> Iterator[tuple[int, list[str]]]:
        """(number of its first document, batch) for the owned, unfinished parts of ``docs``.

        ``piece`` is (this run's piece index, the pieces that part k is dealt to: ``owners[k % len]``).
        Batches never straddle a part boundary. ``read[0]`` ends as the number of documents read.
        """
        index, owners = piece
        batch: list[str] = []
        chars, first, n = 0, 0, -1
        for n, doc in enumerate(docs):
            k = n // part_docs
            if k in finished or owners[k % len(owners)] != index:  # read, not tokenized
                continue
            if batch and k != first // part_docs:
                yield first, batch
                batch, chars = [], 0
            if not batch:
                first = n
            batch.append(doc)
            chars += len(doc)
            if len(batch) == BATCH_DOCS or chars >= BATCH_CHARS:
                yield first, batch
                batch, chars = [], 0
        read[0] = n + 1
        if batch:
            yield first, batch

    def _tokenize(
        self,
        jobs: Iterator[tuple[int | None, object]],
        pool: Tokenizers,
        stats: ReadStats,
        part_docs: int,
        progress: bool,
    ) -> tuple[int, int]:
        """Tokenize ``jobs`` and write their documents into parts; returns (documents written, parts committed).

        A job is (number of its first document, or None for right after the previous job's, batch);
        its result may span parts (a batch of records), and what the workers counted while
        reading records is merged into ``stats`` in order.
        """
        delay = float(os.environ.get(PART_DELAY_ENV, "0"))
        bar = tqdm(desc=self.name, unit=" docs", disable=not progress, leave=False)
        window: deque = deque()
        writer, committed, pos = None, 0, 0

        def commit():
            nonlocal writer, committed
            writer.close()
            writer, committed = None, committed + 1
            if delay:
                time.sleep(delay)

        def consume():
            nonlocal writer, pos
            first, result = window.popleft()
            flat, lengths, counted = result()
            if counted is not None:
                stats.merge(counted)
            pos = pos if first is None else first
            ends = np.cumsum(lengths)
            i = 0
            while i < len(lengths):  # the documents of part k, then of k + 1, ...
                k = (pos + i) // part_docs
                j = min(len(lengths), (k + 1) * part_docs - pos)
                if writer is not None and writer.path != self._part(k):  # results arrive in part order
                    commit()
                if writer is None:
                    writer = ShardWriter(self._part(k), self.dtype, self.eos_id)
                writer.add_flat(flat[ends[i - 1] if i else 0 : ends[j - 1]], lengths[i:j])
                i = j
            pos += len(lengths)
            bar.update(len(lengths))

        try:
            for first, job in jobs:
                window.append((first, pool.submit(job)))
                if len(window) > READ_AHEAD * max(pool.workers, 1) + 1:  # bounded read-ahead
                    consume()
            while window:
                consume()
            if writer is not None:
                commit()
        finally:
            if writer is not None:
                writer.abort()
            bar.close()
        return pos, committed

    def _concatenate(self, n_docs: int, part_docs: int) -> tuple[int, int]:
        """Parts -> final ``.bin/.idx``; checks that the parts hold exactly the ``n_docs`` documents read."""
        n_parts = -(-n_docs // part_docs)
        parts = [_valid_shard(self._part(k)) for k in range(n_parts)]
        for k, p in enumerate(parts):
            expected = min(part_docs, n_docs - k * part_docs)
            if p is None or p.n_docs != expected:
                got = "missing" if p is None else f"{p.n_docs} documents"
                raise MegaMetaError(
                    f"{self._part(k)}: part {k} is {got}, expected {expected}; "
                    f"remove {self.parts_dir} and rerun `megameta preprocess`"
                )
        return concatenate(parts, self.base, self.dtype)
