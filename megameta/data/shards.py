"""Memory-mapped token shards: ``<root>/<lang>/<split>.bin`` + ``.idx`` + ``<root>/manifest.json``.

``.bin`` is a flat array of token ids (uint16 when the vocabulary fits, else int32).
Since format version 2 every document is stored followed by its ``</s>``
separator, so ``.bin`` *is* the packed stream ``doc0 </s> doc1 </s> ...`` and a
packed chunk is one contiguous slice (no per-position document lookup).
``.idx`` is a 24-byte header (magic ``MMETAIDX``, format version u32, bin itemsize
u32, document count u64) followed by ``n_docs + 1`` int64 offsets into ``.bin``;
document d is ``bin[offsets[d] : offsets[d+1] - 1]`` and ``bin[offsets[d+1] - 1]``
is its separator.

Readers memory-map both files; opening a shard reads only the header and checks
sizes (and the last offset), so start-up cost does not depend on corpus size.
Version 1 shards (no stored separators) are refused with a message asking to
rerun ``megameta preprocess``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
from pathlib import Path

import numpy as np

from megameta.errors import InputError

MAGIC = b"MMETAIDX"
FORMAT_VERSION = 2
HEADER = struct.Struct("<8sIIQ")
MANIFEST = "manifest.json"
MANIFEST_KIND = "shards"  # tells this manifest from a corpus manifest; older runs' manifests lack it


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class ShardWriter:
    """Append documents to ``<path>.bin/.idx`` under temporary names; ``close()`` renames them into place.

    ``add_flat`` appends many documents at once from a flat array that already holds
    each document's separator, with their lengths (separator included).
    """

    def __init__(self, path: str | Path, dtype: np.dtype, eos_id: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.eos_id = int(eos_id)
        # Unique temporary names: several machines may write the same part of a unit at once (a piece
        # and a merge run); each renames whole files into place, and the bytes are the same.
        tag = f"tmp-{socket.gethostname()}-{os.getpid()}"
        self._tmp_bin = self.path.with_name(f".{self.path.name}.bin.{tag}")
        self._tmp_idx = self.path.with_name(f".{self.path.name}.idx.{tag}")
        self._bin = open(self._tmp_bin, "wb")
        self._ends: list[np.ndarray] = []
        self._n = 0

    def add(self, ids: list[int] | np.ndarray) -> None:
        """One document (without separator)."""
        arr = np.asarray(ids, dtype=self.dtype)
        self.add_flat(np.append(arr, np.asarray(self.eos_id, self.dtype)), np.array([len(arr) + 1]))

    def add_flat(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        flat = np.asarray(flat, dtype=self.dtype)
        self._bin.write(flat.tobytes())
        self._ends.append(self._n + np.cumsum(lengths, dtype=np.int64))
        self._n += len(flat)

    @property
    def n_docs(self) -> int:
        return sum(len(e) for e in self._ends)

    def close(self) -> tuple[int, int]:
        """Finish both files atomically; returns (documents, tokens without separators)."""
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        offsets = np.concatenate([np.zeros(1, np.int64), *self._ends])
        write_index(self._tmp_idx, offsets, self.dtype)
        # .bin first: a reader checks .idx against .bin, so a crash between the renames is detected.
        os.replace(self._tmp_bin, self.path.with_suffix(".bin"))
        os.replace(self._tmp_idx, self.path.with_suffix(".idx"))
        n_docs = len(offsets) - 1
        return n_docs, int(offsets[-1]) - n_docs

    def abort(self) -> None:
        self._bin.close()
        self._tmp_bin.unlink(missing_ok=True)


def index_header(dtype: np.dtype, n_docs: int) -> bytes:
    """The ``.idx`` header: the one place it is written."""
    return HEADER.pack(MAGIC, FORMAT_VERSION, np.dtype(dtype).itemsize, n_docs)


def write_index(path: Path, offsets: np.ndarray, dtype: np.dtype) -> None:
    with open(path, "wb") as f:
        f.write(index_header(dtype, len(offsets) - 1))
        f.write(np.asarray(offsets, dtype=np.int64).tobytes())
        f.flush()
        os.fsync(f.fileno())


def concatenate(parts: list[TokenShard], out: Path, dtype: np.dtype) -> tuple[int, int]:
    """Shards ``parts`` -> one shard ``out.bin/.idx``, streamed (temporary names, ``.bin`` renamed first).

    Returns (documents, tokens without separators). Memory: one part's offsets at a time.
    """
    n_docs = sum(p.n_docs for p in parts)
    tmp_bin, tmp_idx = out.with_name(out.name + ".bin.tmp"), out.with_name(out.name + ".idx.tmp")
    with open(tmp_bin, "wb") as f:
        for p in parts:
            with open(p.path.with_suffix(".bin"), "rb") as src:
                shutil.copyfileobj(src, f, 1 << 22)
        f.flush()
        os.fsync(f.fileno())
    total = 0
    with open(tmp_idx, "wb") as f:
        f.write(index_header(dtype, n_docs))
        f.write(np.zeros(1, np.int64).tobytes())
        for p in parts:
            f.write((np.asarray(p.offsets[1:]) + total).tobytes())
            total += p.stream_len
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_bin, out.with_suffix(".bin"))
    os.replace(tmp_idx, out.with_suffix(".idx"))
    return n_docs, total - n_docs


class TokenShard:
    """A read-only memory-mapped (lang, split) shard.

    ``offsets`` is int64 [n_docs + 1]; ``tokens`` is the flat id array (separators included).
    Neither is read whole. ``n_tokens`` counts document tokens (separators excluded),
    ``stream_len`` the whole packed stream.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        idx_path, bin_path = self.path.with_suffix(".idx"), self.path.with_suffix(".bin")
        for p in (idx_path, bin_path):
            if not p.exists():
                raise InputError(f"shard file missing: {p}")
        size = idx_path.stat().st_size
        if size < HEADER.size:
            raise InputError(f"{idx_path}: truncated index ({size} bytes, header needs {HEADER.size})")
        with open(idx_path, "rb") as f:
            magic, version, itemsize, n_docs = HEADER.unpack(f.read(HEADER.size))
        if magic != MAGIC:
            raise InputError(f"{idx_path}: not a MegaMeta index file (bad magic)")
        if version != FORMAT_VERSION:
            raise InputError(
                f"{idx_path}: index format version {version}, this tool reads {FORMAT_VERSION}; "
                "rerun `megameta preprocess` (it rebuilds old-format shards in place)"
            )
        if itemsize not in (2, 4):
            raise InputError(f"{idx_path}: bad token item size {itemsize}")
        expected = HEADER.size + 8 * (n_docs + 1)
        if size != expected:
            raise InputError(
                f"{idx_path}: truncated or corrupt index ({size} bytes, expected {expected} for {n_docs} documents)"
            )
        self.dtype = np.dtype(np.uint16 if itemsize == 2 else np.int32)
        self.n_docs = int(n_docs)
        self.offsets = np.memmap(idx_path, dtype=np.int64, mode="r", offset=HEADER.size, shape=(n_docs + 1,))
        bin_size = bin_path.stat().st_size
        if bin_size % itemsize:
            raise InputError(
                f"{bin_path}: size {bin_size} is not a multiple of the token size {itemsize} (truncated?)"
            )
        self.stream_len = bin_size // itemsize
        if int(self.offsets[-1]) != self.stream_len or int(self.offsets[0]) != 0:
            raise InputError(
                f"{idx_path}: index covers {int(self.offsets[-1])} tokens but {bin_path} holds {self.stream_len} (truncated or mismatched pair)"
            )
        self.n_tokens = self.stream_len - self.n_docs
        # np.memmap refuses empty files; an empty shard has no tokens to map.
        self.tokens = (
            np.memmap(bin_path, dtype=self.dtype, mode="r") if self.stream_len else np.zeros(0, self.dtype)
        )

    def doc(self, d: int) -> np.ndarray:
        """Document d's token ids (without its separator)."""
        return np.asarray(self.tokens[self.offsets[d] : self.offsets[d + 1] - 1])


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise InputError(f"no shards at {root}: {path} not found (run `megameta preprocess` first)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: corrupt manifest ({e})") from None
    kind = manifest.get("kind", MANIFEST_KIND) if isinstance(manifest, dict) else None
    if kind != MANIFEST_KIND:
        raise InputError(f"{path}: not a shard manifest (kind {kind!r}); point data at a shard dir")
    return manifest


def check_vocab(manifest: dict, expected_hash: str, root: str | Path) -> None:
    """Training refuses shards tokenized with another vocabulary."""
    got = manifest.get("vocab_hash")
    if got != expected_hash:
        raise InputError(
            f"{Path(root) / MANIFEST}: shards were made with vocabulary {str(got)[:12]}, "
            f"but the tokenizer is {expected_hash[:12]}; rerun `megameta preprocess`"
        )
