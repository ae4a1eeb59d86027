"""Raw text -> memory-mapped token shards + ``manifest.json``.

One unit of work is a (language, split) pair. Units run one after another;
inside a unit, documents are tokenized by ``workers`` processes in ordered
batches, so the output is byte-identical for any worker count. Each unit's
files appear atomically (temporary name, then rename) together with a
``.done.json`` record of its sources; a rerun skips units whose record matches,
so a killed run resumes without redoing finished units. ``manifest.json`` is
written last.

Bad input never crashes the run and is never silent: invalid UTF-8 is decoded
with replacement characters, empty lines/documents and invalid JSON lines are
skipped, and documents longer than ``MAX_DOC_CHARS`` are split into pieces; all
are counted in the manifest and in the summary table.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

import megameta
from megameta.data.readers import ReadStats, check_source, iter_documents
from megameta.data.shards import MANIFEST, ShardWriter, token_dtype
from megameta.data.tokenizer import load_tokenizer, vocab_hash

MAX_DOC_CHARS = 200_000
BATCH_DOCS = 256

_worker_tok = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tok
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _worker_tok = load_tokenizer(tokenizer_dir)
    _worker_tok.model_max_length = 1 << 60  # documents are packed later; silence the length warning


def _encode(batch: list[str]) -> list[list[int]]:
    return _worker_tok(batch, add_special_tokens=False)["input_ids"]


def file_digest(path: str | Path) -> dict:
    """size and sha256 of a source file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": str(path), "size": os.path.getsize(path), "sha256": h.hexdigest()}


def _split_long(docs: Iterator[str], stats: ReadStats) -> Iterator[str]:
    for doc in docs:
        if len(doc) <= MAX_DOC_CHARS:
            yield doc
            continue
        stats.skipped["long document split"] += 1
        for i in range(0, len(doc), MAX_DOC_CHARS):
            yield doc[i : i + MAX_DOC_CHARS]


def _batches(sources: list[str], text_field: str, stats: ReadStats) -> Iterator[list[str]]:
    batch: list[str] = []
    for source in sources:
        for doc in _split_long(iter_documents(source, text_field, stats), stats):
            batch.append(doc)
            if len(batch) == BATCH_DOCS:
                yield batch
                batch = []
    if batch:
        yield batch


def _unit_record(sources: list[str], vhash: str, text_field: str) -> dict:
    return {
        "sources": [file_digest(s) if not s.startswith("hf:") else {"path": s} for s in sources],
        "vocab_hash": vhash,
        "text_field": text_field,
    }


def preprocess(
    sources: dict[str, dict[str, list[str]]],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    text_field: str = "text",
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Tokenize ``sources`` (split -> lang -> files) into shards under ``out_dir``; return the manifest."""
    out_dir = Path(out_dir)
    for files in (f for by_lang in sources.values() for f in by_lang.values()):
        for source in files:
            check_source(source)
    tok = load_tokenizer(tokenizer_dir)
    vhash = vocab_hash(tokenizer_dir)
    dtype = token_dtype(len(tok))
    manifest = {
        "format_version": 1,
        "tool_version": megameta.__version__,
        "vocab_hash": vhash,
        "vocab_size": len(tok),
        "dtype": dtype.name,
        "eos_id": tok.eos_token_id,
        "languages": {},
    }
    pool = mp.get_context("spawn").Pool(workers, _init_worker, (str(tokenizer_dir),)) if workers > 1 else None
    if pool is None:
        _init_worker(str(tokenizer_dir))
    try:
        for split, by_lang in sources.items():
            for lang, files in by_lang.items():
                entry = _run_unit(lang, split, files, out_dir, vhash, dtype, text_field, pool, progress)
                manifest["languages"].setdefault(lang, {})[split] = entry
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out_dir / MANIFEST)
    return manifest


def _run_unit(lang, split, files, out_dir, vhash, dtype, text_field, pool, progress) -> dict:
    base = out_dir / lang / split
    done_path = base.with_suffix(".done.json")
    record = _unit_record(files, vhash, text_field)
    if done_path.exists():
        done = json.loads(done_path.read_text())
        if {k: done.get(k) for k in record} == record and base.with_suffix(".bin").exists():
            if progress:
                tqdm.write(f"[preprocess] {lang}/{split}: up to date, skipped")
            return done
    stats = ReadStats()
    writer = ShardWriter(base, dtype)
    start = time.time()
    bar = tqdm(desc=f"{lang}/{split}", unit=" docs", disable=not progress, leave=False)
    try:
        batches = _batches(files, text_field, stats)
        encoded = pool.imap(_encode, batches) if pool is not None else map(_encode, batches)
        for ids_batch in encoded:
            for ids in ids_batch:
                writer.add(ids)
            bar.update(len(ids_batch))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    docs, tokens = writer.close()
    entry = {
        **record,
        "docs": docs,
        "tokens": tokens,
        "bytes": stats.bytes,
        "skipped": dict(stats.skipped),
        "replaced_utf8_lines": stats.replaced_utf8,
        "seconds": round(time.time() - start, 2),
    }
    tmp = done_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry, indent=2))
    os.replace(tmp, done_path)
    return entry


def summary_table(manifest: dict) -> str:
    """The per-language table printed at the end of ``megameta preprocess``."""
    rows = [("lang", "split", "docs", "tokens", "MB", "skipped")]
    for lang, splits in sorted(manifest["languages"].items()):
        for split, e in splits.items():
            skipped = ", ".join(f"{n} {why}" for why, n in e.get("skipped", {}).items()) or "-"
            if e.get("replaced_utf8_lines"):
                skipped += f"; {e['replaced_utf8_lines']} lines with invalid UTF-8 (replaced)"
            rows.append(
                (lang, split, f"{e['docs']:,}", f"{e['tokens']:,}", f"{e['bytes'] / 1e6:.1f}", skipped)
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
    )
