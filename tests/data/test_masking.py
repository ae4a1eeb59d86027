"""MLM masking: 15% / 80-10-10 on a large batch, specials never selected, deterministic per sample."""

from __future__ import annotations

import numpy as np

from megameta.data.masking import IGNORE_INDEX, mask_tokens, special_table

V, MASK = 1000, 999
SPECIAL = special_table(V, [0, 1, 2, 3, MASK])


def _batch(B=256, T=512, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, MASK, size=(B, T))
    ids[:, 0] = 0
    ids[:, 100::97] = 2
    ids[::3, -50:] = 1  # padding
    return ids


def test_statistics_on_large_batch():
    ids = _batch()
    inputs, labels = mask_tokens(ids, np.arange(len(ids)), 0, 0.15, MASK, SPECIAL, V)
    cand = ~SPECIAL[ids]
    sel = labels != IGNORE_INDEX
    assert not (sel & ~cand).any(), "a special or padding token was selected"
    np.testing.assert_array_equal(labels[sel], ids[sel])
    n = cand.sum()
    rate = sel.sum() / n
    assert abs(rate - 0.15) < 5 * np.sqrt(0.15 * 0.85 / n)
    k = sel.sum()
    masked = (inputs == MASK) & sel
    unchanged = (inputs == ids) & sel
    replaced = sel & ~masked & ~unchanged
    for frac, want in ((masked.sum() / k, 0.8), (replaced.sum() / k, 0.1 * (1 - 1 / (V - 5)))):
        assert abs(frac - want) < 5 * np.sqrt(want * (1 - want) / k), (frac, want)
    assert abs(unchanged.sum() / k - 0.1) < 0.01
    assert not SPECIAL[inputs[replaced]].any(), "random replacement drew a special token"
    np.testing.assert_array_equal(inputs[~sel], ids[~sel])


def test_deterministic_per_sample_id():
    ids = _batch(B=8, T=128)
    a_in, a_lab = mask_tokens(ids, np.arange(100, 108), 5, 0.15, MASK, SPECIAL, V)
    perm = np.array([3, 1, 7, 0])
    b_in, b_lab = mask_tokens(ids[perm], np.arange(100, 108)[perm], 5, 0.15, MASK, SPECIAL, V)
    np.testing.assert_array_equal(a_in[perm], b_in)
    np.testing.assert_array_equal(a_lab[perm], b_lab)
    c_in, _ = mask_tokens(ids, np.arange(100, 108), 6, 0.15, MASK, SPECIAL, V)
    assert not np.array_equal(a_in, c_in)


def test_whole_word_masking_selects_whole_words():
    rng = np.random.default_rng(1)
    word_start = np.zeros(V, bool)
    word_start[4:500] = True  # ids 4..499 start words, 500..998 continue them
    ids = np.where(
        rng.random((64, 256)) < 0.4, rng.integers(4, 500, (64, 256)), rng.integers(500, MASK, (64, 256))
    )
    ids[:, 0] = 0
    _, labels = mask_tokens(ids, np.arange(64), 0, 0.15, MASK, SPECIAL, V, word_start=word_start)
    sel = labels != IGNORE_INDEX
    cont = ~word_start[ids] & ~SPECIAL[ids]
    cont[:, 1:] &= ~SPECIAL[ids[:, :-1]]  # a fragment right after a special token is its own word
    # a continuation piece is selected exactly when the piece before it (same word) is
    np.testing.assert_array_equal(sel[:, 1:][cont[:, 1:]], sel[:, :-1][cont[:, 1:]])
    words = word_start[ids].sum()
    assert 0.1 < sel[word_start[ids]].sum() / words < 0.2
