"""Raw text -> memory-mapped token shards + ``manifest.json``, parallel and resumable.

One unit of work is a (language, split) pair; units run one after another.
Inside a unit the documents (after long-document splitting) are numbered
0, 1, 2, ... and cut into *parts* of ``part_docs`` documents. Batches of
documents are tokenized by ``workers`` processes, at most a few batches in
flight (memory stays bounded whatever the input size), and results are
consumed in order, so the output is byte-identical for any worker count. Each
finished part is committed atomically as a small shard
``<lang>/<split>.parts/NNNNNN.bin/.idx`` (temporary name, then rename).

Tokenizing calls SentencePiece's C++ encoder directly and maps its ids to the
XLM-R layout of the saved Hugging Face tokenizer (piece i -> i + 1, unknown ->
``<unk>``), checked when the run starts. It is about 8x faster per core than
the ``tokenizers`` Unigram model (``bench/preprocess.py``) and is what XLM-R's
own data pipeline (fairseq's ``spm_encode``) ran. Two consequences: text that
spells a special token (``"<mask>"``) stays text, and on rare Viterbi ties or
unknown characters the segmentation can differ from the HF tokenizer's (4 of
the demo corpus's 42,545 documents).

Resume: a rerun reads the inputs again (reading is cheap next to tokenizing)
but skips the documents of committed parts without tokenizing them, then
tokenizes the rest. When all parts exist they are concatenated into
``<lang>/<split>.bin/.idx`` (temporary names, ``.bin`` renamed before ``.idx``),
a ``<split>.done.json`` record of the unit's sources (size, sha256), vocabulary
and settings is written atomically, and the parts are deleted. A unit whose
record matches is skipped. ``manifest.json`` is written last. A kill at any
point therefore loses at most one part's work, and the final files are
byte-identical to an uninterrupted run.

Bad input never crashes the run and is never silent (see
:mod:`megameta.data.readers`): invalid UTF-8 is decoded with replacement
characters, empty lines/files/documents and invalid JSON lines are skipped,
over-long plain-text lines are split, and documents longer than
``MAX_DOC_CHARS`` characters are split into pieces (at whitespace when there is
some near the cut); all are counted per reason in the manifest and in the
summary table. A missing or unreadable source raises :class:`InputError`
naming the path before any work starts (exit code 2).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

import megameta
from megameta.data.readers import MAX_JSON_LINE_BYTES, MAX_LINE_BYTES, ReadStats, check_source, iter_documents
from megameta.data.shards import FORMAT_VERSION, HEADER, MAGIC, MANIFEST, ShardWriter, TokenShard, token_dtype
from megameta.data.tokenizer import Vocab, check_hf_layout, vocab_hash
from megameta.fileio import sha256_file, write_atomic

MAX_DOC_CHARS = 200_000
# A batch (the unit sent to a worker) ends at BATCH_DOCS documents or BATCH_CHARS characters; at
# most 2 * workers + 1 batches are in flight, so memory does not grow with the input.
BATCH_DOCS = 512
BATCH_CHARS = 1 << 21
PART_DOCS = 16_384


def memory_bound_mb(workers: int) -> int:
    """Peak memory (PSS summed over the main process and its workers) that preprocessing stays under.

    Measured on 1 GB of text (``tests/reliability/test_preprocess_load.py``): 232 MiB with 1 worker,
    272 MiB with 2; the bound leaves room for longer documents and other tokenizers.
    """
    return 256 + 128 * workers


# Test hook: seconds to sleep after committing each part (lets a test kill the run mid-unit).
_PART_DELAY_ENV = "MEGAMETA_PREPROCESS_PART_DELAY"

_worker_vocab: Vocab | None = None
_worker_dtype = np.dtype(np.uint16)


def _init_worker(tokenizer_dir: str, dtype: str) -> None:
    global _worker_vocab, _worker_dtype
    _worker_vocab = Vocab(tokenizer_dir)
    _worker_dtype = np.dtype(dtype)


def _encode(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize a batch: (flat ids with ``</s>`` after every document, lengths incl. separator)."""
    ids = _worker_vocab.encode(batch)  # one thread: parallelism comes from the worker processes
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    body = np.fromiter(
        itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()) - len(ids)
    )
    body = Vocab.to_ids(body)
    flat = np.full(int(lengths.sum()), Vocab.eos_token_id, dtype=_worker_dtype)
    keep = np.ones(len(flat), dtype=bool)
    keep[np.cumsum(lengths) - 1] = False
    flat[keep] = body
    return flat, lengths


def file_digest(path: str | Path, prior: dict | None = None) -> dict:
    """size, mtime and sha256 of a source file (streamed); reuses ``prior``'s hash if size and mtime match."""
    st = os.stat(path)
    if prior and prior.get("size") == st.st_size and prior.get("mtime_ns") == st.st_mtime_ns:
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": prior["sha256"]}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def _split_long(docs: Iterator[str], stats: ReadStats) -> Iterator[str]:
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


def _settings(text_field: str, vhash: str) -> dict:
    """Everything besides the sources that decides a unit's output bytes."""
    return {
        "vocab_hash": vhash,
        "text_field": text_field,
        "shard_format": FORMAT_VERSION,
        "max_doc_chars": MAX_DOC_CHARS,
        "max_line_bytes": MAX_LINE_BYTES,
        "max_json_line_bytes": MAX_JSON_LINE_BYTES,
    }


def _same_inputs(a: dict, b: dict) -> bool:
    key = (
        "vocab_hash",
        "text_field",
        "shard_format",
        "max_doc_chars",
        "max_line_bytes",
        "max_json_line_bytes",
    )

    def strip(s):
        return [{k: v for k, v in x.items() if k != "mtime_ns"} for x in s]

    return all(a.get(k) == b.get(k) for k in key) and strip(a.get("sources", [])) == strip(
        b.get("sources", [])
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=2))


class _Tokenizers:
    """The worker pool (or in-process tokenizer for ``workers <= 1``), started on first use."""

    def __init__(self, tokenizer_dir: str, dtype: np.dtype, workers: int):
        self.args, self.workers, self.pool, self.ready = (
            (str(tokenizer_dir), dtype.name),
            workers,
            None,
            False,
        )

    def submit(self, batch: list[str]):
        if not self.ready:
            if self.workers > 1:
                # fork (where available) skips re-importing the package in every worker; the parent
                # has started no threads that a forked child could inherit half-held.
                method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
                self.pool = mp.get_context(method).Pool(self.workers, _init_worker, self.args)
            else:
                _init_worker(*self.args)
            self.ready = True
        if self.pool is None:
            result = _encode(batch)
            return lambda: result
        return self.pool.apply_async(_encode, (batch,)).get

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def preprocess(
    sources: dict[str, dict[str, list[str]]],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    text_field: str = "text",
    workers: int = 1,
    progress: bool = True,
    part_docs: int = PART_DOCS,
) -> dict:
    """Tokenize ``sources`` (split -> lang -> files) into shards under ``out_dir``; return the manifest."""
    out_dir = Path(out_dir)
    for files in (f for by_lang in sources.values() for f in by_lang.values()):
        for source in files:
            check_source(source)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # no Rust thread pool in a parent that forks workers
    tok = check_hf_layout(tokenizer_dir)
    vhash = vocab_hash(tokenizer_dir)
    dtype = token_dtype(len(tok))
    manifest = {
        "format_version": FORMAT_VERSION,
        "tool_version": megameta.__version__,
        "vocab_hash": vhash,
        "vocab_size": len(tok),
        "dtype": dtype.name,
        "eos_id": tok.eos_token_id,
        "languages": {},
    }
    pool = _Tokenizers(str(tokenizer_dir), dtype, workers)
    try:
        for split, by_lang in sources.items():
            for lang, files in by_lang.items():
                unit = _Unit(
                    out_dir / lang / split, files, _settings(text_field, vhash), dtype, tok.eos_token_id
                )
                manifest["languages"].setdefault(lang, {})[split] = unit.run(pool, part_docs, progress)
    finally:
        pool.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / MANIFEST, manifest)
    return manifest


class _Unit:
    """One (language, split): parts under ``<split>.parts/``, then the final ``.bin/.idx``."""

    def __init__(self, base: Path, files: list[str], settings: dict, dtype: np.dtype, eos_id: int):
        self.base, self.files, self.dtype, self.eos_id = base, files, dtype, eos_id
        self.name = f"{base.parent.name}/{base.name}"
        self.done_path = base.with_name(base.name + ".done.json")
        self.parts_dir = base.with_name(base.name + ".parts")
        prior = _read_json(self.done_path) or _read_json(self.parts_dir / "unit.json") or {}
        prior_src = {s["path"]: s for s in prior.get("sources", []) if "sha256" in s}
        self.record = {
            "sources": [
                {"path": s} if s.startswith("hf:") else file_digest(s, prior_src.get(str(s))) for s in files
            ],
            **settings,
        }

    def run(self, pool: _Tokenizers, part_docs: int, progress: bool) -> dict:
        done = _read_json(self.done_path)
        if done and _same_inputs(done, self.record) and self._final_ok():
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            if progress:
                tqdm.write(f"[preprocess] {self.name}: up to date, skipped")
            return done
        start = time.time()
        n_done = self._prepare_parts(part_docs)
        if n_done and progress:
            tqdm.write(f"[preprocess] {self.name}: resuming after {n_done} finished part(s)")
        stats = ReadStats()
        docs = _split_long(
            itertools.chain.from_iterable(
                iter_documents(s, self.record["text_field"], stats) for s in self.files
            ),
            stats,
        )
        skip = n_done * part_docs
        for _ in itertools.islice(docs, skip):  # documents of finished parts: read, not tokenized
            pass
        self._tokenize(docs, pool, n_done, part_docs, progress)
        n_docs, n_tokens = self._concatenate()
        entry = {
            **self.record,
            "docs": n_docs,
            "tokens": n_tokens,
            "bytes": stats.bytes,
            "skipped": dict(stats.skipped),
            "replaced_utf8_lines": stats.replaced_utf8,
            "seconds": round(time.time() - start, 2),
        }
        _write_json(self.done_path, entry)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return entry

    def _final_ok(self) -> bool:
        try:
            TokenShard(self.base)
        except Exception:  # missing or torn: rebuild from parts (or from scratch)
            return False
        return True

    def _part(self, k: int) -> Path:
        return self.parts_dir / f"{k:06d}"

    def _prepare_parts(self, part_docs: int) -> int:
        """Keep the committed parts of an identical earlier run; returns how many (a prefix)."""
        meta = {**self.record, "part_docs": part_docs}
        old = _read_json(self.parts_dir / "unit.json")
        if old is None or not _same_inputs(old, meta) or old.get("part_docs") != part_docs:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.parts_dir / "unit.json", meta)
        for tmp in [*self.parts_dir.glob("*.tmp"), *self.parts_dir.glob(".*.tmp-*")]:  # a killed write
            tmp.unlink()
        n = 0
        while self._part(n).with_suffix(".idx").exists():
            try:
                TokenShard(self._part(n))
            except Exception:  # a torn pair: redo from here
                break
            n += 1
        for stale in self.parts_dir.glob("[0-9]*"):
            if int(stale.stem) >= n:
                stale.unlink()
        return n

    def _tokenize(
        self, docs: Iterator[str], pool: _Tokenizers, part: int, part_docs: int, progress: bool
    ) -> None:
        delay = float(os.environ.get(_PART_DELAY_ENV, "0"))
        bar = tqdm(desc=self.name, unit=" docs", initial=part * part_docs, disable=not progress, leave=False)
        window = deque()
        writer = None

        def consume():
            nonlocal writer, part
            flat, lengths = window.popleft()()
            if writer is None:
                writer = ShardWriter(self._part(part), self.dtype, self.eos_id)
            writer.add_flat(flat, lengths)
            bar.update(len(lengths))
            if writer.n_docs >= part_docs:
                writer.close()
                writer, part = None, part + 1
                if delay:
                    time.sleep(delay)

        try:
            # Batches never straddle a part boundary, so each part is written from whole batches.
            batch_docs = min(BATCH_DOCS, part_docs)
            in_part = chars = 0
            batch: list[str] = []
            for doc in docs:
                batch.append(doc)
                in_part += 1
                chars += len(doc)
                if len(batch) == batch_docs or in_part == part_docs or chars >= BATCH_CHARS:
                    window.append(pool.submit(batch))
                    batch, chars = [], 0
                    in_part %= part_docs
                    if len(window) > 2 * max(pool.workers, 1) + 1:  # bounded read-ahead
                        consume()
            if batch:
                window.append(pool.submit(batch))
            while window:
                consume()
            if writer is not None:
                writer.close()
                writer = None
        finally:
            if writer is not None:
                writer.abort()
            bar.close()

    def _concatenate(self) -> tuple[int, int]:
        """Parts -> final ``.bin/.idx`` (streamed; temporary names, then rename). Returns (docs, tokens)."""
        parts = []
        k = 0
        while self._part(k).with_suffix(".idx").exists():
            parts.append(TokenShard(self._part(k)))
            k += 1
        n_docs = sum(p.n_docs for p in parts)
        tmp_bin = self.base.with_name(self.base.name + ".bin.tmp")
        tmp_idx = self.base.with_name(self.base.name + ".idx.tmp")
        with open(tmp_bin, "wb") as out:
            for p in parts:
                with open(p.path.with_suffix(".bin"), "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        total = 0
        with open(tmp_idx, "wb") as out:
            out.write(HEADER.pack(MAGIC, FORMAT_VERSION, self.dtype.itemsize, n_docs))
            out.write(np.zeros(1, np.int64).tobytes())
            for p in parts:
                out.write((np.asarray(p.offsets[1:]) + total).tobytes())
                total += p.stream_len
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_bin, self.base.with_suffix(".bin"))
        os.replace(tmp_idx, self.base.with_suffix(".idx"))
        return n_docs, total - n_docs


def summary_table(manifest: dict) -> str:
    """The per-language table printed at the end of ``megameta preprocess``."""
    rows = [("lang", "split", "docs", "tokens", "MB", "skipped / handled")]
    totals = [0, 0, 0]
    for lang, splits in sorted(manifest["languages"].items()):
        for split, e in splits.items():
            skipped = ", ".join(f"{n} {why}" for why, n in e.get("skipped", {}).items()) or "-"
            if e.get("replaced_utf8_lines"):
                skipped += f"; {e['replaced_utf8_lines']} lines with invalid UTF-8 (replaced)"
            if e["docs"] == 0:
                skipped += "; WARNING: no documents"
            rows.append(
                (lang, split, f"{e['docs']:,}", f"{e['tokens']:,}", f"{e['bytes'] / 1e6:.1f}", skipped)
            )
            totals = [totals[0] + e["docs"], totals[1] + e["tokens"], totals[2] + e["bytes"]]
    rows.append(("total", "", f"{totals[0]:,}", f"{totals[1]:,}", f"{totals[2] / 1e6:.1f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
    )
