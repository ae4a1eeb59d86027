"""XLM-R-style MLM masking, vectorized and deterministic per sample.

Each non-special token is selected with probability ``mask_prob``; a selected
token becomes ``<mask>`` (80%), a random non-special token (10%) or stays (10%).
Labels hold the original id at selected positions and -100 elsewhere. Every
random draw is a counter-based hash of (seed, sample id, position), so a sample
is masked identically whatever batch, rank or resume it lands in.

With ``word_start`` (a bool table over the vocabulary, True for pieces that
begin a word, i.e. start with SentencePiece's U+2581), selection is per word:
all pieces of a word are masked together (the 80/10/10 choice stays per piece).
"""

from __future__ import annotations

import numpy as np

from megameta.data.sampler import uniform

IGNORE_INDEX = -100


def mask_tokens(
    ids: np.ndarray,
    sample_ids: np.ndarray,
    seed: int,
    mask_prob: float,
    mask_id: int,
    special: np.ndarray,
    vocab_size: int,
    word_start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask a batch.

    Args:
        ids: int64 [B, T] token ids (padding included).
        sample_ids: int64 [B] global sample ids (the hash counter).
        special: bool table [vocab_size]: ids never selected (``<s> <pad> </s> <unk> <mask>``).
        word_start: optional bool table [vocab_size] for whole-word masking.

    Returns:
        (input_ids [B, T], labels [B, T]) as int64 arrays.
    """
    B, T = ids.shape
    pos = np.arange(T, dtype=np.int64)[None, :]
    sid = np.asarray(sample_ids, dtype=np.int64)[:, None]
    candidate = ~special[ids]
    if word_start is None:
        selected = candidate & (uniform(seed, sid, pos, 0) < mask_prob)
    else:
        # Each piece takes the draw of the piece that starts its word; specials start words too.
        starts = word_start[ids] | ~candidate
        start_pos = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
        draw = uniform(seed, sid, pos, 0)
        selected = candidate & (np.take_along_axis(draw, start_pos, axis=1) < mask_prob)
    action = uniform(seed, sid, pos, 1)
    n_special = int(special.sum())
    # Random replacements are drawn among the non-special ids, which are contiguous after the
    # first four (<s> <pad> </s> <unk>) and before <mask> (the last id) in XLM-R's layout.
    low = 4 if n_special else 0
    high = mask_id if mask_id >= low else vocab_size
    random_ids = low + (uniform(seed, sid, pos, 2) * (high - low)).astype(np.int64)
    inputs = ids.copy()
    inputs[selected & (action < 0.8)] = mask_id
    replace = selected & (action >= 0.8) & (action < 0.9)
    inputs[replace] = random_ids[replace]
    labels = np.where(selected, ids, IGNORE_INDEX)
    return inputs, labels


def special_table(vocab_size: int, special_ids: list[int]) -> np.ndarray:
    table = np.zeros(vocab_size, dtype=bool)
    table[list(special_ids)] = True
    return table


def word_start_table(tokenizer) -> np.ndarray:
    """True for pieces that begin a word (SentencePiece marks them with U+2581)."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([p.startswith("\u2581") for p in pieces], dtype=bool)
