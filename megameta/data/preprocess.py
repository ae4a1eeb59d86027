"""Raw text -> memory-mapped token shards + ``manifest.json``: parallel, resumable, spread over machines.

One unit of work is a (language, split) pair (:mod:`megameta.data.units`); units run
one after another. Inside a unit the documents (read, optionally deduplicated, long
ones split: :mod:`megameta.data.documents`) are numbered and cut into parts. Batches
are tokenized by ``workers`` processes (:mod:`megameta.data.encode`): batches of raw
records that the workers read into documents themselves when the run tokenizes the
whole unit, batches of documents otherwise. At most a few batches are in flight
(memory stays bounded whatever the input size) and results are consumed in order, so
the output is byte-identical for any worker count.

Many machines: ``piece=(i, n)`` makes this run tokenize only its share of the parts
and stop (:func:`megameta.data.units.piece_owners`: units are spread over the pieces
by source bytes, a large unit's parts are dealt to the several pieces that share it);
run pieces 0..n-1 anywhere that shares the filesystem (a SLURM array), in any order,
killed and rerun at will. A final full run (``piece=(0, 1)``, the default) tokenizes
whatever parts are still missing, concatenates them and writes ``manifest.json``: the
same bytes as a single-machine run. A piece reads the whole input of the units it
shares (a compressed stream cannot be entered in the middle) and tokenizes its share.

Resume: a rerun skips units whose ``<split>.done.json`` matches their inputs and,
inside a unit, the committed parts (read, not tokenized). A kill at any point loses
at most one part's work per process, and the final files are byte-identical to an
uninterrupted run.

Bad input never crashes the run and is never silent (see
:mod:`megameta.data.readers`): invalid UTF-8 is decoded with replacement
characters, empty lines/files/documents and invalid JSON lines are skipped,
over-long plain-text lines are split, documents longer than ``MAX_DOC_CHARS``
characters are split into pieces; all are counted per reason in the manifest and
in the summary table. A missing or unreadable source raises :class:`InputError`
naming the path before any work starts, a truncated or corrupt compressed stream
when it is reached (exit code 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

import megameta
from megameta.data.encode import Tokenizers
from megameta.data.readers import TEXT_LAYOUTS, check_source
from megameta.data.shards import FORMAT_VERSION, MANIFEST, MANIFEST_KIND, token_dtype
from megameta.data.tokenizer import check_hf_layout, vocab_hash
from megameta.data.units import PART_DOCS, Unit, piece_owners, settings
from megameta.errors import InputError
from megameta.fileio import write_atomic


def memory_bound_mb(workers: int) -> int:
    """Peak memory (PSS summed over the main process and its workers) that preprocessing stays under.

    Measured on 1 GB of text (``tests/reliability/test_preprocess_load.py``): 235 MiB with 1 worker,
    287 MiB with 2; the bound leaves room for longer documents and other tokenizers. Deduplication
    adds its set of hashes (:mod:`megameta.data.documents`).
    """
    return 256 + 128 * workers


def preprocess(
    sources: dict[str, dict[str, list[str]]],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    text_field: str = "text",
    workers: int = 1,
    progress: bool = True,
    part_docs: int = PART_DOCS,
    fmt: str = "lines",
    dedup: bool = False,
    piece: tuple[int, int] = (0, 1),
) -> dict:
    """Tokenize ``sources`` (split -> lang -> files) into shards under ``out_dir``.

    ``fmt`` is the plain-text layout (``lines`` or ``paragraphs``), ``dedup`` drops exact
    duplicate documents per (language, split), ``piece=(i, n)`` tokenizes only piece i of n
    (see the module docstring). Returns the manifest (full run) or, for a piece,
    ``{"kind": "piece", "piece": [i, n], "units": {lang: {split: {"parts", "tokenized"}}}}``.
    """
    index, num = piece
    if not (num >= 1 and 0 <= index < num):
        raise InputError(f"piece {index} of {num}: need 0 <= shard index < number of shards")
    if fmt not in TEXT_LAYOUTS:
        raise InputError(f"unknown text layout {fmt!r} (expected one of {', '.join(TEXT_LAYOUTS)})")
    out_dir = Path(out_dir)
    for files in (f for by_lang in sources.values() for f in by_lang.values()):
        for source in files:
            check_source(source)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # no Rust thread pool in a parent that forks workers
    tok = check_hf_layout(tokenizer_dir)
    vhash = vocab_hash(tokenizer_dir)
    dtype = token_dtype(len(tok))
    manifest = {
        "kind": MANIFEST_KIND,
        "format_version": FORMAT_VERSION,
        "tool_version": megameta.__version__,
        "vocab_hash": vhash,
        "vocab_size": len(tok),
        "dtype": dtype.name,
        "eos_id": tok.eos_token_id,
        "languages": {},
    }
    if num > 1:
        manifest = {"kind": "piece", "piece": [index, num], "units": {}}
    pool = Tokenizers(str(tokenizer_dir), dtype, workers)
    unit_settings = settings(text_field, vhash, fmt, dedup)
    units = [
        (lang, split, Unit(out_dir / lang / split, files, unit_settings, dtype, tok.eos_token_id))
        for split, by_lang in sources.items()
        for lang, files in by_lang.items()
    ]
    owners = piece_owners([u.source_bytes for _, _, u in units], num) if num > 1 else [None] * len(units)
    try:
        for (lang, split, unit), share in zip(units, owners, strict=True):
            if share is None:
                manifest["languages"].setdefault(lang, {})[split] = unit.run(pool, part_docs, progress)
            elif index in share:  # a piece reads only the units it shares
                manifest["units"].setdefault(lang, {})[split] = unit.run(
                    pool, part_docs, progress, index, share
                )
    finally:
        pool.close()
    if num == 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    elif progress:
        tqdm.write(f"[preprocess] piece {index} of {num} done; run without --num-shards to merge")
    return manifest


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
