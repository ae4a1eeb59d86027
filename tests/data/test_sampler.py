"""Language sampler: q_i rates, exact per-epoch coverage, world-size independence, resume."""

from __future__ import annotations

import numpy as np
import pytest

from megameta.data.sampler import LanguageSampler, language_probs, permute

N_CHUNKS = [5000, 800, 120, 9]
TOKENS = [4e6, 5e5, 4e4, 2e3]


@pytest.mark.parametrize("alpha", [0.3, 0.7, 1.0])
def test_frequencies_match_q(alpha):
    s = LanguageSampler(N_CHUNKS, TOKENS, lambda g: alpha, seed=3)
    n = 1 << 17
    lang, _, _ = s.lookup(np.arange(n))
    q = language_probs(np.array(TOKENS), alpha)
    got = np.bincount(lang, minlength=len(q)) / n
    sd = np.sqrt(q * (1 - q) / n)
    assert np.all(np.abs(got - q) < 5 * sd + 1e-9), (got, q)
    # the smallest language is not rounded away even at alpha = 1
    assert got[-1] > 0


def test_each_chunk_once_per_epoch():
    s = LanguageSampler([37, 11], [1.0, 1.0], lambda g: 1.0, seed=0, block=64)
    lang, chunk, epoch = s.lookup(np.arange(2000))
    for lang_id, n in enumerate([37, 11]):
        sel = lang == lang_id
        for e in range(int(epoch[sel].max())):  # complete epochs only
            got = np.sort(chunk[sel & (epoch == e)])
            np.testing.assert_array_equal(got, np.arange(n))
        assert not np.array_equal(chunk[sel & (epoch == 0)], chunk[sel & (epoch == 1)])


def test_pure_function_of_index_any_order_and_slicing():
    a = LanguageSampler(N_CHUNKS, TOKENS, lambda g: 0.3, seed=7, block=256)
    ref = a.lookup(np.arange(3000))
    for world in (2, 3):
        b = LanguageSampler(N_CHUNKS, TOKENS, lambda g: 0.3, seed=7, block=256)
        out = [np.empty(3000, np.int64) for _ in range(3)]
        for rank in range(world):
            idx = np.arange(rank, 3000, world)
            for o, r in zip(out, b.lookup(idx), strict=True):
                o[idx] = r
        for o, r in zip(out, ref, strict=True):
            np.testing.assert_array_equal(o, r)
    # resume: a fresh sampler asked from position 2500 on (or backwards) gives the same values
    c = LanguageSampler(N_CHUNKS, TOKENS, lambda g: 0.3, seed=7, block=256)
    for o, r in zip(c.lookup(np.arange(2500, 3000)), ref, strict=True):
        np.testing.assert_array_equal(o, r[2500:])
    for o, r in zip(c.lookup(np.arange(0, 100)), ref, strict=True):
        np.testing.assert_array_equal(o, r[:100])
    d = LanguageSampler(N_CHUNKS, TOKENS, lambda g: 0.3, seed=8, block=256)
    assert not np.array_equal(d.lookup(np.arange(3000))[1], ref[1])


def test_alpha_schedule_and_counts():
    total = 1 << 16
    s = LanguageSampler(N_CHUNKS, TOKENS, lambda g: 1.0 + (0.3 - 1.0) * min(1.0, g / total), seed=1)
    lang, _, _ = s.lookup(np.arange(total))
    early = np.bincount(lang[: total // 8], minlength=4) / (total // 8)
    late = np.bincount(lang[-total // 8 :], minlength=4) / (total // 8)
    assert early[0] > 0.85 and late[0] < 0.7  # annealing alpha flattens the mixture
    np.testing.assert_array_equal(s.samples_per_language(12345), np.bincount(lang[:12345], minlength=4))
    fresh = LanguageSampler(N_CHUNKS, TOKENS, lambda g: 1.0 + (0.3 - 1.0) * min(1.0, g / total), seed=1)
    np.testing.assert_array_equal(fresh.samples_per_language(40000), np.bincount(lang[:40000], minlength=4))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permute_is_bijection(n):
    p = permute(np.arange(n), n, key=12345)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))
    # vectorized over mixed (n, key) gives the same as one call per n
    mixed = permute(np.array([0, n - 1]), np.array([n, n]), np.array([12345, 12345], dtype=np.uint64))
    np.testing.assert_array_equal(mixed, p[[0, n - 1]])
