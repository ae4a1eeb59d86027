"""XLM-R-style MLM masking, vectorized and deterministic per sample.

Each non-special token is selected with probability ``mask_prob``; a selected
token becomes ``<mask>`` (80%), a random non-special token (10%) or stays (10%).
Special and padding tokens are never selected. Labels hold the original id at
selected positions and -100 elsewhere.

Randomness is counter-based, so a sample is masked identically whatever batch,
rank or resume it lands in: a 64-bit row key ``k = hash(seed, sample id)`` is
computed once per row. Every position t draws one 32-bit value
``fmix32(hi32(k) + (t + 1) * golden32)`` for selection (``< mask_prob * 2^32``);
only the selected ~15% then draw one 64-bit ``splitmix64(k + (t + 1) * golden64)``
split into fields: bits 0-15 the 80/10/10 action, bits 32-63 the random
replacement (multiply-shift onto the non-special ids). One cheap 32-bit hash
per token (instead of three 64-bit ones) keeps the masker at tens of millions of
tokens per second on one core.

With ``word_start`` (a bool table over the vocabulary, True for pieces that
begin a word, i.e. start with SentencePiece's U+2581), selection is per word:
all pieces of a word take the selection draw of the piece that starts it (the
80/10/10 choice stays per piece). Specials start words too, and are never selected.
"""

from __future__ import annotations

import numpy as np

from megameta.data.sampler import _GOLDEN, hash64, mix64_inplace

IGNORE_INDEX = -100
_LOW16 = np.uint64(0xFFFF)


def _mix32_inplace(h: np.ndarray) -> np.ndarray:
    """murmur3's fmix32 finalizer, in place on uint32 (array integer ops wrap silently)."""
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


_POS32: dict[int, np.ndarray] = {}


def _positions32(T: int) -> np.ndarray:
    """(t + 1) * golden32 for t < T, cached per T."""
    if T not in _POS32:
        _POS32[T] = np.arange(1, T + 1, dtype=np.uint32) * np.uint32(0x9E3779B9)
    return _POS32[T]


def mask_tokens(
    ids: np.ndarray,
    sample_ids: np.ndarray,
    seed: int,
    mask_prob: float,
    mask_id: int,
    special: np.ndarray,
    vocab_size: int,
    word_start: np.ndarray | None = None,
    replace_pool: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask a batch.

    Args:
        ids: int64 [B, T] token ids (padding included).
        sample_ids: int64 [B] global sample ids (the hash counter).
        special: bool table [vocab_size]: ids never selected (``<s> <pad> </s> <unk> <mask>``).
        word_start: optional bool table [vocab_size] for whole-word masking.
        replace_pool: the ids random replacements come from (default: all non-special ids).

    Returns:
        (input_ids [B, T], labels [B, T]) as int64 arrays.
    """
    B, T = ids.shape
    row = hash64(seed, np.asarray(sample_ids, dtype=np.int64)).reshape(B, 1)
    # Selection draw for every position: one 32-bit hash of (row key, position).
    h = (row >> np.uint64(32)).astype(np.uint32) + _positions32(T)
    _mix32_inplace(h)
    if word_start is not None:
        starts = word_start[ids] | special[ids]
        pos = np.arange(T, dtype=np.int64)[None, :]
        start_pos = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
        h = np.take_along_axis(h, start_pos, axis=1)
    below = h < np.uint32(min(round(mask_prob * 2**32), 2**32 - 1))
    # Work on flat indices of the ~15% drawn positions from here on (2-D nonzero is ~8x slower).
    flat = np.flatnonzero(below)
    ids_flat = ids.reshape(-1)
    orig = ids_flat[flat]
    keep = ~special[orig]
    flat, orig = flat[keep], orig[keep]
    labels = np.full(B * T, IGNORE_INDEX, dtype=np.int64)
    labels[flat] = orig
    # Only the selected positions need the action and replacement fields: one 64-bit hash each,
    # bits 0-15 the 80/10/10 action, bits 32-63 the replacement.
    r = flat // T
    hs = mix64_inplace(row[r, 0] + (flat - r * T + 1).astype(np.uint64) * _GOLDEN)
    action = hs & _LOW16
    inputs = ids_flat.copy()
    to_mask = action < np.uint64(52429)  # 0.8 * 2^16
    inputs[flat[to_mask]] = mask_id
    rand = ~to_mask & (action < np.uint64(58982))  # [0.8, 0.9) * 2^16
    pool = replace_pool if replace_pool is not None else replacement_ids(special, vocab_size)
    pick = ((hs[rand] >> np.uint64(32)) * np.uint64(len(pool))) >> np.uint64(32)
    inputs[flat[rand]] = pool[pick.astype(np.int64)]
    return inputs.reshape(B, T), labels.reshape(B, T)


def replacement_ids(special: np.ndarray, vocab_size: int) -> np.ndarray:
    """The non-special ids random replacements are drawn from."""
    pool = np.flatnonzero(~special[:vocab_size]).astype(np.int64)
    return pool if len(pool) else np.arange(vocab_size, dtype=np.int64)


def special_table(vocab_size: int, special_ids: list[int]) -> np.ndarray:
    table = np.zeros(vocab_size, dtype=bool)
    table[list(special_ids)] = True
    return table


def word_start_table(tokenizer) -> np.ndarray:
    """True for pieces that begin a word (SentencePiece marks them with U+2581)."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([p.startswith("\u2581") for p in pieces], dtype=bool)
