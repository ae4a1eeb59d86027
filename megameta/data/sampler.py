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

import threading
from collections.abc import Callable

import numpy as np

from megameta.errors import InputError

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64_inplace(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place on a uint64 array: a bijective avalanche mix (vectorized)."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def mix64(x: np.ndarray) -> np.ndarray:
    """:func:`mix64_inplace` on a uint64 copy of ``x`` (scalars and 0-d arrays too)."""
    with np.errstate(over="ignore"):
        return mix64_inplace(np.asarray(x, dtype=np.uint64).copy())


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


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values (vectorized; rounding above 2^53 can only overestimate)."""
    e = np.frexp(np.maximum(x, 0).astype(np.float64))[1]
    return np.where(x > 0, e, 0).astype(np.int64)


def permute(i: np.ndarray, n: int | np.ndarray, key: int | np.ndarray, rounds: int = 4) -> np.ndarray:
    """A keyed pseudo-random bijection of [0, n), applied to ``i`` (Feistel network + cycle walking).

    The network works on w = bit_length(n - 1) bits split into a high part of ceil(w/2)
    and a low part of floor(w/2) bits (an unbalanced Feistel: the widths swap every round,
    and an even number of rounds restores them), so the domain 2^w is < 2n and cycle
    walking needs under two passes on average. ``n`` and ``key`` may be arrays
    broadcastable to ``i`` (one bijection per element's (n, key)), so many languages are
    permuted in one vectorized call; an element's result depends only on its own (i, n, key).
    """
    assert rounds % 2 == 0, "an even number of rounds keeps the half widths in place"
    i = np.array(i, dtype=np.uint64, copy=True).reshape(-1)
    n64 = np.broadcast_to(np.asarray(n, dtype=np.int64), i.shape).reshape(-1)
    key = np.broadcast_to(np.asarray(key, dtype=np.uint64), i.shape).reshape(-1)
    w = np.maximum(_bit_length(n64 - 1), 1).astype(np.uint64)
    wa = (w + np.uint64(1)) // np.uint64(2)  # high part's width
    wb = w - wa  # low part's width (0 when w == 1)
    keys = [mix64_inplace(key ^ np.uint64((r + 1) * int(_GOLDEN) % (1 << 64))) for r in range(rounds)]

    def feistel(x: np.ndarray, sel) -> np.ndarray:
        hi_w, lo_w = wa[sel], wb[sel]
        lo_mask = (np.uint64(1) << lo_w) - np.uint64(1)
        hi, lo = x >> lo_w, x & lo_mask
        for k in keys:
            # (hi: hi_w bits, lo: lo_w bits) -> (lo, hi ^ F(lo)): the new high part has lo_w bits.
            f = mix64_inplace(lo ^ k[sel]) & ((np.uint64(1) << hi_w) - np.uint64(1))
            hi, lo = lo, hi ^ f
            hi_w, lo_w = lo_w, hi_w
        return (hi << lo_w) | lo

    out = feistel(i, slice(None))
    nu = n64.astype(np.uint64)
    bad = np.flatnonzero(out >= nu)
    while len(bad):  # cycle walking: apply again until inside [0, n); keeps it a bijection of [0, n)
        out[bad] = feistel(out[bad], bad)
        bad = bad[out[bad] >= nu[bad]]
    out[n64 <= 1] = 0
    return out


def language_probs(counts: np.ndarray | list[float], alpha: float) -> np.ndarray:
    """q_i = p_i^alpha / sum_j p_j^alpha with p_i = n_i / sum n: the one home of the alpha formula.

    ``counts`` are tokens per language (training) or documents per language (the tokenizer's
    sentence sample); a language with n_i = 0 gets q_i = 0. All counts zero is an error.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if not counts.sum() > 0:
        raise InputError("no documents or tokens in any language: cannot compute sampling probabilities")
    p = counts / counts.sum()
    q = p**alpha
    return q / q.sum()


def alpha_schedule(alpha: float, alpha_end: float | None, total_samples: int) -> Callable[[int], float]:
    """Alpha as a function of the global sample index: ``alpha`` annealed linearly to ``alpha_end``
    over ``total_samples`` (constant when ``alpha_end`` is None), then held."""
    end = alpha if alpha_end is None else alpha_end
    span = max(1, total_samples)

    def alpha_at(sample: int) -> float:
        return alpha + (end - alpha) * min(1.0, sample / span)

    return alpha_at


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
        # The trainer's prefetch thread looks samples up while the main thread counts them: the
        # block cache and the running counts above are shared state.
        self._lock = threading.RLock()

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
        """For global indices ``g``: (language index, chunk index, epoch) arrays of the same shape.

        Cost is O(len(g)) plus one block set-up per 4096-sample block touched (amortized).
        Thread-safe.
        """
        with self._lock:
            return self._lookup(g)

    def _lookup(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = np.asarray(g, dtype=np.int64)
        shape = g.shape
        g = g.reshape(-1)
        lang = np.empty_like(g)
        j = np.empty_like(g)
        blocks = g // self.block
        first, last = (int(blocks.min()), int(blocks.max())) if len(g) else (0, -1)
        for b in range(first, last + 1) if last - first < 4 else np.unique(blocks).tolist():
            sel = slice(None) if first == last else blocks == b
            labels, rank, before = self._block(b)
            pos = g[sel] - b * self.block
            lab = labels[pos]
            lang[sel] = lab
            j[sel] = before[lab] + rank[pos]
        n = self.n_chunks[lang]
        epoch = j // n
        key = hash64(self.seed, lang, epoch)
        chunk = permute(j - epoch * n, n, key).astype(np.int64)
        return lang.reshape(shape), chunk.reshape(shape), epoch.reshape(shape)

    def samples_per_language(self, g: int) -> np.ndarray:
        """How many of the global samples [0, g) went to each language (int64 [n_langs]).

        A pure function of g, so per-language counts (and tokens: samples x seq_len)
        survive a resume on any world size without being stored. Thread-safe.
        """
        b, r = divmod(int(g), self.block)
        with self._lock:
            counts = self._cum_before(b)
            if r:
                counts += np.bincount(self._block(b)[0][:r], minlength=len(counts))
        return counts
