"""Memory-mapped token shards: ``<root>/<lang>/<split>.bin`` + ``.idx`` + ``<root>/manifest.json``.

``.bin`` is a flat array of token ids (uint16 when the vocabulary fits, else int32).
``.idx`` is a 24-byte header (magic ``MMETAIDX``, format version u32, bin itemsize u32,
document count u64) followed by ``n_docs + 1`` int64 token offsets into ``.bin``.

Readers memory-map both files; opening a shard reads only the header and checks
sizes, so start-up cost does not depend on corpus size.

Packed sequences: the documents of one language form a stream
``doc0 </s> doc1 </s> ...``; chunk k is stream positions ``[k*C, (k+1)*C)`` with
``C = max_seq_len - 2``, and becomes ``<s> chunk </s>``. Position x belongs to
document d where d is the number of documents starting at or before x, minus
one; its token is ``bin[x - d]`` unless ``x - d == offsets[d + 1]`` (the separator).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from megameta.errors import InputError

MAGIC = b"MMETAIDX"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ")
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class ShardWriter:
    """Append documents to ``<path>.bin/.idx`` under temporary names; ``close()`` renames them into place."""

    def __init__(self, path: str | Path, dtype: np.dtype):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self._tmp_bin = self.path.with_name(self.path.name + ".bin.tmp")
        self._bin = open(self._tmp_bin, "wb")
        self.offsets = [0]

    def add(self, ids: list[int] | np.ndarray) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self._bin.write(arr.tobytes())
        self.offsets.append(self.offsets[-1] + len(arr))

    def close(self) -> tuple[int, int]:
        """Finish both files atomically; returns (documents, tokens)."""
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        tmp_idx = self.path.with_name(self.path.name + ".idx.tmp")
        with open(tmp_idx, "wb") as f:
            f.write(HEADER.pack(MAGIC, FORMAT_VERSION, self.dtype.itemsize, len(self.offsets) - 1))
            f.write(np.asarray(self.offsets, dtype=np.int64).tobytes())
            f.flush()
            os.fsync(f.fileno())
        # .bin first: a reader checks .idx against .bin, so a crash between the renames is detected.
        os.replace(self._tmp_bin, self.path.with_suffix(".bin"))
        os.replace(tmp_idx, self.path.with_suffix(".idx"))
        return len(self.offsets) - 1, self.offsets[-1]

    def abort(self) -> None:
        self._bin.close()
        self._tmp_bin.unlink(missing_ok=True)


class TokenShard:
    """A read-only memory-mapped (lang, split) shard.

    ``offsets`` is int64 [n_docs + 1]; ``tokens`` is the flat id array. Neither is read whole.
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
            raise InputError(f"{idx_path}: index format version {version}, this tool reads {FORMAT_VERSION}")
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
        self.n_tokens = bin_size // itemsize
        if int(self.offsets[-1]) != self.n_tokens or int(self.offsets[0]) != 0:
            raise InputError(
                f"{idx_path}: index covers {int(self.offsets[-1])} tokens but {bin_path} holds {self.n_tokens} (truncated or mismatched pair)"
            )
        # np.memmap refuses empty files; an empty shard has no tokens to map.
        self.tokens = (
            np.memmap(bin_path, dtype=self.dtype, mode="r") if self.n_tokens else np.zeros(0, self.dtype)
        )

    @property
    def stream_len(self) -> int:
        """Tokens in the packed stream: every document plus one separator after it."""
        return self.n_tokens + self.n_docs

    def doc(self, d: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[d] : self.offsets[d + 1]])

    def _doc_of(self, x: np.ndarray) -> np.ndarray:
        """Vectorized: for stream positions x, the document d with offsets[d] + d <= x < offsets[d+1] + d + 1."""
        lo = np.zeros(x.shape, dtype=np.int64)
        hi = np.full(x.shape, self.n_docs, dtype=np.int64)  # invariant: start(lo) <= x < start(hi)
        while True:
            active = hi - lo > 1
            if not active.any():
                return lo
            mid = (lo + hi) // 2
            start = self.offsets[mid] + mid
            go_right = active & (start <= x)
            lo = np.where(go_right, mid, lo)
            hi = np.where(active & ~go_right, mid, hi)

    def stream_tokens(self, x: np.ndarray, eos_id: int) -> np.ndarray:
        """Token ids at stream positions ``x`` (any shape, values in [0, stream_len))."""
        d = self._doc_of(x)
        flat = x - d
        sep = flat == self.offsets[d + 1]
        safe = np.minimum(flat, max(self.n_tokens - 1, 0))
        out = self.tokens[safe].astype(np.int64) if self.n_tokens else np.zeros(x.shape, np.int64)
        out[sep] = eos_id
        return out


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise InputError(f"no shards at {root}: {path} not found (run `megameta preprocess` first)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: corrupt manifest ({e})") from None


def check_vocab(manifest: dict, expected_hash: str, root: str | Path) -> None:
    """Training refuses shards tokenized with another vocabulary."""
    got = manifest.get("vocab_hash")
    if got != expected_hash:
        raise InputError(
            f"{Path(root) / MANIFEST}: shards were made with vocabulary {str(got)[:12]}, "
            f"but the tokenizer is {expected_hash[:12]}; rerun `megameta preprocess`"
        )
