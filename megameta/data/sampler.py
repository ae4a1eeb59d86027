"""Language-balanced, world-size-independent sample order.

The global sample stream is a pure function of (seed, global sample index g):

* Positions are grouped in blocks of ``block`` samples. Block b holds a
  multinomial(block, q_b) draw of languages (q_b from the alpha in force at b),
  shuffled by a generator seeded with (seed, b). Small languages therefore
  appear at their exact expected rate, not rounded away.
* The j-th sample of language l overall (j counts l's positions before g) is
  chunk ``perm_{l,e}(j mod n_l)`` of that language, epoch ``e = j // n_l``, where
  ``perm`` is a keyed Feistel bijection over [0, n_l). No permutation is ever
  materialized, so memory does not grow with the corpus, and within an epoch
  every chunk of a language is used exactly once.

Any number of ranks sees the same global stream and takes its slice; the only
state a checkpoint needs is g. Reaching block b from scratch costs b tiny
multinomial draws (a few microseconds each), done once at resume.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijective avalanche mix of uint64 values (vectorized)."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def hash64(*keys: int | np.ndarray) -> np.ndarray:
    """Counter-based hash of integer keys (scalars or broadcastable arrays) -> uint64."""
    h = np.uint64(0x6A09E667F3BCC908)
    for k in keys:
        with np.errstate(over="ignore"):
            h = mix64(np.asarray(h, dtype=np.uint64) ^ (np.asarray(k).astype(np.uint64) + _GOLDEN))
    return np.asarray(h, dtype=np.uint64)


def uniform(*keys: int | np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from a counter-based hash of ``keys``."""
    return (hash64(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def permute(i: np.ndarray, n: int, key: int, rounds: int = 4) -> np.ndarray:
    """A keyed pseudo-random bijection of [0, n), applied to ``i`` (Feistel network + cycle walking)."""
    i = np.asarray(i, dtype=np.uint64)
    if n <= 1:
        return np.zeros_like(i)
    half = max(1, (int(n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    keys = [hash64(key, r) for r in range(rounds)]

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> shift, x & mask
        for k in keys:
            left, right = right, left ^ (mix64(right ^ k) & mask)
        return (left << shift) | right

    out = feistel(i)
    # The Feistel domain is [0, 4^half) >= n; walking the cycle until we land inside keeps it a bijection of [0, n).
    bad = out >= np.uint64(n)
    while bad.any():
        out[bad] = feistel(out[bad])
        bad = out >= np.uint64(n)
    return out


def language_probs(counts: np.ndarray, alpha: float) -> np.ndarray:
    """q_i = p_i^alpha / sum_j p_j^alpha with p_i = n_i / sum n (counts in tokens)."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts / counts.sum()
    q = p**alpha
    return q / q.sum()


class LanguageSampler:
    """Maps global sample indices to (language, chunk, epoch), deterministically.

    Args:
        n_chunks: chunks (packed sequences) per language, in a fixed language order.
        weights: the p_i counts (tokens per language) used for q.
        alpha_at: alpha as a function of the global sample index at a block start.
        seed: the data seed.
        block: samples per language-assignment block.
    """

    def __init__(
        self,
        n_chunks: list[int],
        weights: list[float],
        alpha_at: Callable[[int], float],
        seed: int,
        block: int = 4096,
    ):
        if any(n < 1 for n in n_chunks):
            raise ValueError(f"every language needs at least one chunk, got {n_chunks}")
        self.n_chunks = np.asarray(n_chunks, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.alpha_at = alpha_at
        self.seed = int(seed)
        self.block = int(block)
        self._cum_block = 0  # _cum holds each language's count over blocks [0, _cum_block)
        self._cum = np.zeros(len(n_chunks), dtype=np.int64)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def probs(self, block_index: int = 0) -> np.ndarray:
        return language_probs(self.weights, self.alpha_at(block_index * self.block))

    def _counts(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, b, 1])
        return rng.multinomial(self.block, self.probs(b))

    def _cum_before(self, b: int) -> np.ndarray:
        if b < self._cum_block:  # going backwards (rare): recount from the start
            self._cum_block, self._cum = 0, np.zeros_like(self._cum)
        while self._cum_block < b:
            self._cum += self._counts(self._cum_block)
            self._cum_block += 1
        return self._cum.copy()

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(language per position, rank of the position within its language in the block, counts before b)."""
        if b not in self._cache:
            counts = self._counts(b)
            labels = np.repeat(np.arange(len(counts)), counts)
            labels = labels[np.random.default_rng([self.seed, b, 2]).permutation(self.block)]
            order = np.argsort(labels, kind="stable")
            rank = np.empty(self.block, dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            rank[order] = np.arange(self.block) - np.repeat(starts, counts)
            if len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[b] = (labels, rank, self._cum_before(b))
        return self._cache[b]

    def lookup(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For global indices ``g``: (language index, chunk index, epoch) arrays of the same shape."""
        g = np.asarray(g, dtype=np.int64)
        lang = np.empty_like(g)
        j = np.empty_like(g)
        blocks = g // self.block
        for b in np.unique(blocks):
            sel = blocks == b
            labels, rank, before = self._block(int(b))
            pos = g[sel] - b * self.block
            lang[sel] = labels[pos]
            j[sel] = before[labels[pos]] + rank[pos]
        n = self.n_chunks[lang]
        epoch = j // n
        chunk = np.empty_like(g)
        for lang_id in np.unique(lang):
            for e in np.unique(epoch[lang == lang_id]):
                sel = (lang == lang_id) & (epoch == e)
                key = int(hash64(self.seed, int(lang_id), int(e)))
                chunk[sel] = permute(j[sel] % n[sel], int(self.n_chunks[lang_id]), key).astype(np.int64)
        return lang, chunk, epoch
