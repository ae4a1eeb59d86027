"""The stuck-rank report and the collective-failure test: pure functions of heartbeats and errors."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from megameta.layout import RunLayout
from megameta.train.watchdog import UNKNOWN, Heartbeat, is_collective_failure, stuck_rank_report


def test_report_names_the_ranks_behind_and_where_they_stopped():
    progress = {0: (3, 0, 2), 1: (3, 0, 0), 2: (3, 0, 2), 3: (2, 1, 1)}
    assert (
        stuck_rank_report(progress)
        == "rank 1 stopped in step 3 (forward), rank 3 stopped in step 2 (backward)"
    )


def test_report_when_every_rank_is_at_the_same_point():
    report = stuck_rank_report({0: (5, 1, 1), 1: (5, 1, 1)})
    assert report.startswith("every rank reached the same point")


def test_a_rank_without_a_heartbeat_is_behind_everyone():
    assert stuck_rank_report({0: (1, 0, 0), 1: UNKNOWN}) == "rank 1 never started"


def test_heartbeat_files_feed_the_failure_message(tmp_path):
    layout = RunLayout.of(tmp_path).phase("meta")
    beats = [Heartbeat(layout, r, 3, timeout_s=60) for r in range(3)]
    for hb in beats:
        hb.enter_step(4)
        hb.beat(0, "forward")
    beats[0].beat(0, "backward")
    beats[2].beat(0, "backward")
    beats[2].beat(1, "sync")
    msg = beats[0].failure_message(RuntimeError("Connection closed by peer\nmore detail"))
    assert msg == (
        "collective failed on rank 0 in step 4 after up to train.dist_timeout_s=60s: "
        "rank 0 stopped in step 4 (backward), rank 1 stopped in step 4 (forward) [Connection closed by peer]"
    )


@pytest.mark.parametrize(
    ("error", "collective"),
    [
        (dist.DistBackendError("NCCL communicator was aborted"), True),
        (RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4021"), True),
        (RuntimeError("Timed out waiting 1800000ms for send operation to complete"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)"), False),
        (ValueError("gloo"), False),
    ],
)
def test_only_process_group_failures_count_as_collective(error, collective):
    assert is_collective_failure(error) is collective
