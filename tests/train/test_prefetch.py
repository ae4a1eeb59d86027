"""The input pipeline ahead of the step: order, look-ahead bound, errors, shutdown, the rank's sample order."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import torch

from megameta.train.prefetch import Prefetcher, model_inputs, rank_batches


def test_items_come_out_in_order():
    with_prefetch = Prefetcher(iter(range(200)), depth=3)
    assert list(with_prefetch) == list(range(200))
    with pytest.raises(StopIteration):  # stays exhausted
        next(with_prefetch)


def test_it_builds_ahead_but_at_most_depth_items():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    p = Prefetcher(source(), depth=3)
    assert next(p) == 0
    deadline = time.time() + 5
    while len(produced) < 4 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    # one taken, three queued, one more built and waiting for room in the queue
    assert 4 <= len(produced) <= 5
    p.close()


def test_an_error_in_the_source_is_raised_in_order_by_next():
    def source():
        yield 1
        yield 2
        raise ValueError("shard 7 is truncated")

    p = Prefetcher(source(), depth=2)
    assert next(p) == 1 and next(p) == 2
    with pytest.raises(ValueError, match="shard 7 is truncated"):
        next(p)


def test_close_stops_the_thread_even_when_the_queue_is_full():
    stop = threading.Event()

    def endless():
        while not stop.is_set():
            yield 0

    before = {t for t in threading.enumerate() if t.name == "megameta-prefetch"}
    p = Prefetcher(endless(), depth=2)
    next(p)
    p.close()
    alive = {t for t in threading.enumerate() if t.name == "megameta-prefetch"} - before
    assert not any(t.is_alive() for t in alive)
    p.close()  # idempotent


class _Stream:
    def batch(self, indices: np.ndarray) -> dict:
        return {"idx": torch.from_numpy(indices.copy()), "padded": False}


def _same(sample: int) -> int:
    return sample


@pytest.mark.parametrize(("world", "accum"), [(1, 1), (2, 2), (3, 1)])
def test_rank_batches_cover_the_global_stream_once_and_resume_mid_run(world, accum):
    mb, steps = 2, 4
    global_batch = mb * accum * world
    per_rank = [
        list(itertools.islice(rank_batches(_Stream(), 0, _same, r, world, mb, accum), steps * accum))
        for r in range(world)
    ]
    seen = np.concatenate([idx for batches in per_rank for idx, _ in batches])
    assert sorted(seen.tolist()) == list(range(steps * global_batch))
    for batches in per_rank:
        assert all(torch.equal(b["idx"], torch.from_numpy(idx)) for idx, b in batches)
    # a run resumed after step 2 reads exactly what the uninterrupted run read from step 3 on
    resumed = list(
        itertools.islice(
            rank_batches(_Stream(), 2 * global_batch, _same, world - 1, world, mb, accum), 2 * accum
        )
    )
    tail = per_rank[world - 1][2 * accum :]
    assert [i.tolist() for i, _ in resumed] == [i.tolist() for i, _ in tail]


def test_a_skipped_data_window_is_jumped_over():
    """After a rollback the divergence guard maps a step that would start in its window past it."""
    skip = {8: 16}  # steps of 4 samples: the window [8, 16) is never read

    batches = rank_batches(_Stream(), 0, lambda s: skip.get(s, s), 0, 1, 4, 1)
    starts = [int(idx[0]) for idx, _ in itertools.islice(batches, 4)]
    assert starts == [0, 4, 16, 20]


def test_model_inputs_pass_a_mask_only_for_padded_batches():
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "labels": torch.full((2, 4), -100),
             "masked_index": torch.tensor([1]), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])}  # fmt: skip
    assert model_inputs({**batch, "padded": False}, torch.device("cpu"))["attention_mask"] is None
    mask = model_inputs({**batch, "padded": True}, torch.device("cpu"))["attention_mask"]
    assert mask.shape == (2, 1, 1, 4) and mask.dtype == torch.bool and not mask[0, 0, 0, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: pinned memory")
def test_batches_are_pinned_on_cuda_hosts():
    _, b = next(rank_batches(_Stream(), 0, _same, 0, 1, 2, 1, pin=True))
    assert b["idx"].is_pinned()
