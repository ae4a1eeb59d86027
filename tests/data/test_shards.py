"""Token shards: round trip, contiguous packing, clear errors for torn or foreign files."""

from __future__ import annotations

import numpy as np
import pytest

from megameta.data.loader import PackedLanguage, TokenIds
from megameta.data.shards import HEADER, MAGIC, ShardWriter, TokenShard
from megameta.errors import InputError

IDS = TokenIds(bos=0, pad=1, eos=2, unk=3, mask=99, vocab_size=100)


def _write(tmp_path, docs):
    w = ShardWriter(tmp_path / "en" / "train", np.uint16, eos_id=2)
    for d in docs:
        w.add(d)
    assert w.close() == (len(docs), sum(len(d) for d in docs))
    return TokenShard(tmp_path / "en" / "train")


def test_round_trip_and_packing(tmp_path):
    docs = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    shard = _write(tmp_path, docs)
    assert (shard.n_docs, shard.n_tokens, shard.stream_len) == (3, 9, 12)
    for d, want in enumerate(docs):
        assert shard.doc(d).tolist() == want
    assert not list(tmp_path.glob("en/*.tmp")) and not list(tmp_path.glob("en/.*tmp*"))
    packed = PackedLanguage(shard, seq_len=6, ids=IDS)  # chunks of 4 stream tokens
    assert packed.n_chunks == 3
    np.testing.assert_array_equal(
        packed.sequences(np.array([0, 1, 2])),
        [[0, 5, 6, 7, 2, 2], [0, 8, 2, 9, 10, 2], [0, 11, 12, 13, 2, 2]],
    )
    short = PackedLanguage(shard, seq_len=20, ids=IDS)  # whole stream shorter than a chunk: padded
    assert short.n_chunks == 1
    assert (
        short.sequences(np.array([0]))[0].tolist() == [0, 5, 6, 7, 2, 8, 2, 9, 10, 11, 12, 13, 2, 2] + [1] * 6
    )


def test_torn_and_foreign_files_are_input_errors(tmp_path):
    _write(tmp_path, [[5, 6], [7]])
    base = tmp_path / "en" / "train"
    idx, binf = base.with_suffix(".idx"), base.with_suffix(".bin")
    good_idx, good_bin = idx.read_bytes(), binf.read_bytes()
    binf.write_bytes(good_bin[:-2])
    with pytest.raises(InputError, match="train.idx: index covers"):
        TokenShard(base)
    binf.write_bytes(good_bin[:-1])
    with pytest.raises(InputError, match="not a multiple"):
        TokenShard(base)
    binf.write_bytes(good_bin)
    idx.write_bytes(good_idx[:-3])
    with pytest.raises(InputError, match="truncated or corrupt index"):
        TokenShard(base)
    idx.write_bytes(b"XXXXXXXX" + good_idx[8:])
    with pytest.raises(InputError, match="bad magic"):
        TokenShard(base)
    idx.write_bytes(HEADER.pack(MAGIC, 1, 2, 2) + good_idx[HEADER.size :])
    with pytest.raises(InputError, match="version 1.*rerun `megameta preprocess`"):
        TokenShard(base)
    idx.unlink()
    with pytest.raises(InputError, match="shard file missing: .*train.idx"):
        TokenShard(base)
