"""MLMStream: the global stream is the same for 1, 2 and 3 ranks and resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megameta.data.loader import MLMStream
from megameta.data.masking import IGNORE_INDEX
from megameta.data.shards import TokenShard
from megameta.data.tokenizer import load_tokenizer

LANGS = ["en", "fr", "es", "ru"]


@pytest.fixture(scope="module")
def make_stream(tiny_shards, tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)

    def make(**kw):
        args = dict(seq_len=64, seed=11, mask_prob=0.15, alpha_at=lambda g: 0.3) | kw
        return MLMStream(tiny_shards, LANGS, tiny_tokenizer, tok, **args)

    return make


def _rank_batches(stream, world, steps, mb):
    """What the trainer's ranks request: rank r of W takes [start + (m*W + r)*mb, +mb) per micro-batch."""
    out = {}
    for step in range(steps):
        for rank in range(world):
            start = step * world * mb + rank * mb
            b = stream.batch(np.arange(start, start + mb))
            for i, g in enumerate(b["sample_id"].tolist()):
                out[g] = (b["input_ids"][i], b["labels"][i], int(b["lang"][i]))
    return out


def test_world_sizes_see_one_global_stream(make_stream):
    total = 6 * 4 * 3  # divisible by 1, 2, 3 ranks x micro-batch 4
    ref = _rank_batches(make_stream(), 1, total // 4, 4)
    for world in (2, 3):
        got = _rank_batches(make_stream(), world, total // (4 * world), 4)
        assert sorted(got) == sorted(ref) == list(range(total))
        for g in ref:
            assert (
                torch.equal(got[g][0], ref[g][0])
                and torch.equal(got[g][1], ref[g][1])
                and got[g][2] == ref[g][2]
            )


def test_resume_continues_exactly(make_stream):
    a = make_stream()
    full = [a.batch(np.arange(i * 8, i * 8 + 8)) for i in range(10)]
    b = make_stream()  # a "restarted" process that resumes at global position 48
    for i in range(6, 10):
        got = b.batch(np.arange(i * 8, i * 8 + 8))
        for k in ("input_ids", "labels", "lang", "sample_id", "attention_mask"):
            assert torch.equal(got[k], full[i][k]), k


def test_batch_contents(make_stream, tiny_shards):
    s = make_stream()
    b = s.batch(np.arange(512))
    assert all(v.dtype == torch.int64 for v in b.values() if isinstance(v, torch.Tensor))
    assert b["input_ids"].shape == (512, 64)
    # the host-side facts the training step uses instead of asking the device
    sel = b["labels"] != IGNORE_INDEX
    assert torch.equal(b["masked_index"], sel.reshape(-1).nonzero().squeeze(1))
    assert torch.equal(b["masked_lang"], b["lang"][sel.nonzero()[:, 0]])
    assert b["n_tokens"] == int(b["attention_mask"].sum())
    assert b["padded"] == bool((b["attention_mask"] == 0).any())
    ids = s.ids
    assert (b["input_ids"][:, 0] == ids.bos).all()
    sel = b["labels"] != IGNORE_INDEX
    assert not sel[b["attention_mask"] == 0].any()
    assert 0.1 < sel.float().mean() < 0.2
    # unmasked positions hold the packed stream: chunk k of language l is bin[k*C:(k+1)*C]
    lang, chunk, _ = s.sampler.lookup(np.arange(512))
    C = 62
    for i in range(0, 512, 37):
        shard = TokenShard(tiny_shards / LANGS[lang[i]] / "train")
        want = np.asarray(shard.tokens[chunk[i] * C : (chunk[i] + 1) * C], dtype=np.int64)
        row, keep = b["input_ids"][i, 1:-1].numpy(), ~sel[i, 1:-1].numpy()
        np.testing.assert_array_equal(row[keep], want[keep])
        np.testing.assert_array_equal(b["labels"][i, 1:-1].numpy()[~keep], want[~keep])
    # all four languages appear, the smallest at roughly its q
    counts = np.bincount(b["lang"].numpy(), minlength=4)
    assert (counts > 0).all()


def test_missing_split_names_the_path(make_stream):
    from megameta.errors import InputError

    with pytest.raises(InputError, match="fr/valid"):  # only en has a valid split
        make_stream(split="valid")


def test_fixed_batch_cycles_a_small_language_with_fresh_masks(make_stream):
    """Validation draws past a language's last chunk wrap around to its first, masked anew; the same
    draws give the same batch (the measure is fixed), and chunk i's tokens are the same each time."""
    stream = make_stream()
    ru = LANGS.index("ru")
    n = stream.packed[ru].n_chunks
    first = stream.fixed_batch(ru, np.arange(2))
    again = stream.fixed_batch(ru, np.arange(n, n + 2))  # the same two chunks, drawn a second time
    for key, value in stream.fixed_batch(ru, np.arange(2)).items():
        assert torch.equal(first[key], value) if isinstance(value, torch.Tensor) else first[key] == value, key
    tokens = [torch.where(b["labels"] == IGNORE_INDEX, b["input_ids"], b["labels"]) for b in (first, again)]
    assert torch.equal(tokens[0], tokens[1])
    assert not torch.equal(first["labels"], again["labels"])
