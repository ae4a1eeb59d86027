"""The stuck-rank report and the collective-failure test: pure functions of heartbeats and errors."""

from __future__ import annotations

import os
import time

import pytest
import torch.distributed as dist

from megameta.train.watchdog import (
    UNKNOWN,
    Heartbeat,
    heartbeat_dir,
    is_collective_failure,
    stuck_rank_report,
)


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
    beats = [Heartbeat(tmp_path / "hb", r, 3, timeout_s=60) for r in range(3)]
    for hb in beats:
        hb.enter_step(4)
        hb.beat(0, "forward")
    beats[0].beat(0, "backward")
    beats[2].beat(0, "backward")
    beats[2].beat(1, "sync")
    for hb in beats[1:]:
        hb.flush()  # the watchdog thread's job in a run; rank 0 flushes itself before reporting
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
        # gloo, when a peer stops answering (a network partition) during a save's all_gather_object:
        (RuntimeError("Application timeout caused pair closure"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)"), False),
        (ValueError("gloo"), False),
    ],
)
def test_only_process_group_failures_count_as_collective(error, collective):
    assert is_collective_failure(error) is collective


def test_beats_are_kept_in_memory_and_written_only_by_flush_when_changed(tmp_path, monkeypatch):
    hb = Heartbeat(tmp_path / "hb", 0, 1, timeout_s=60, interval_s=0.05)
    writes = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (writes.append(b), real_replace(a, b)))
    hb.enter_step(1)
    for micro in range(50):  # a step's worth of beats: no file I/O at all
        hb.beat(micro, "forward")
        hb.beat(micro, "backward")
    assert writes == [] and not hb.path.exists()
    hb.flush()
    hb.flush()  # unchanged: not written again
    assert len(writes) == 1 and hb.path.read_text().split()[:3] == ["1", "49", "1"]


def test_the_watchdog_thread_writes_where_a_stuck_rank_stopped(tmp_path):
    hb = Heartbeat(tmp_path / "hb", 1, 2, timeout_s=60, interval_s=0.05)
    hb.enter_step(3)
    hb.beat(0, "forward")
    hb.start_watchdog()  # the main thread now "hangs": only the thread can write
    deadline = time.time() + 5
    while not hb.path.exists() and time.time() < deadline:
        time.sleep(0.02)
    assert stuck_rank_report(
        {0: (3, 0, 2), **Heartbeat(tmp_path / "hb", 0, 2, 60, peers=[1]).read_all()}
    ) == ("rank 1 stopped in step 3 (forward)")


def test_heartbeats_are_node_local_unless_a_dir_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "local"))
    a, b = heartbeat_dir("", tmp_path / "run" / "meta"), heartbeat_dir("", tmp_path / "run" / "xlingual")
    assert a.parent == b.parent == tmp_path / "local" and a != b
    assert heartbeat_dir(str(tmp_path / "shared"), tmp_path / "run" / "meta") == tmp_path / "shared"


def test_a_report_limited_to_this_nodes_ranks_says_so(tmp_path):
    hb = Heartbeat(tmp_path, 2, 4, timeout_s=60, peers=[2, 3])
    hb.enter_step(1)
    hb.beat(0, "backward")
    msg = hb.failure_message(RuntimeError("gloo: connection closed"))
    assert "rank 3 never started (heartbeats of this node's ranks [2, 3] only)" in msg


def test_collective_failures_anywhere_in_the_block_name_the_rank_others_pass_unchanged(tmp_path):
    """A gloo timeout in the log window's all-reduce (outside any step) is reported like one in a step."""
    from megameta.errors import MegaMetaError

    hb = Heartbeat(tmp_path / "hb", 0, 1, timeout_s=15)
    timeout = RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 15000ms for recv")
    with pytest.raises(
        MegaMetaError, match=r"collective failed on rank 0 .* train\.dist_timeout_s=15s"
    ) as info:
        with hb.collective_failures_reported():
            raise timeout
    assert info.value.__cause__ is timeout  # the backend's own error stays attached
    shape_bug = ValueError("shape mismatch")
    with pytest.raises(ValueError) as raised, hb.collective_failures_reported():
        raise shape_bug
    assert raised.value is shape_bug
