"""Faults injected for real (signals, SIGKILL, corrupted files, full disk, a wedged rank): nothing is lost."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
from helpers import (
    REPO,
    assert_gone,
    cli_env,
    final_digest,
    kill_when,
    log_rows,
    make_run,
    shm_segments,
    start_train,
    train,
    train_cmd,
)

from megameta import checkpoint as ckpt
from megameta.errors import EXIT_REQUEUE

pytestmark = pytest.mark.slow


def run_with_fault(
    cfg, fault: str, *overrides: str, nproc: int = 2, launcher: str = "torchrun"
) -> subprocess.CompletedProcess:
    env = cli_env(MEGAMETA_FAULT=fault)
    return subprocess.run(
        train_cmd(cfg, nproc, *overrides, launcher=launcher),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_latest_is_complete(run) -> str:
    root = run / "meta" / "checkpoints"
    tag = (root / "latest").read_text().strip()
    assert ckpt.check_integrity(root / tag) is None, f"latest names an invalid checkpoint {tag}"
    assert not list(root.glob(".staging-*/**/meta.json")), "a staging dir looks complete"
    return tag


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    """An uninterrupted 8-step run that every faulted run must reproduce exactly."""
    run, cfg = make_run(prepared, tmp_path_factory.mktemp("reference"))
    train(cfg, 2, "phases[0].steps=8")
    return {"digest": final_digest(run), "log": log_rows(run)}


@pytest.mark.parametrize(
    "fault",
    [
        "sigkill@backward:3:1",  # one rank dies mid-step
        "sigkill@backward:2:1",  # ... before the first checkpoint: the restart replays step 1's log row
        "sigkill@save:4:0",  # rank 0 dies after writing its files, before the checkpoint is finalized
        "all-ranks",  # every process of the job is killed at a random step
    ],
)
def test_kill9_resumes_to_identical_weights(prepared, tmp_path, reference, fault):
    run, cfg = make_run(prepared, tmp_path)
    shm_before = shm_segments()
    if fault == "all-ranks":
        proc = start_train(cfg, 2, "phases[0].steps=8")
        ranks = kill_when(proc, run, random.Random(os.getpid()).randint(2, 6), signal.SIGKILL, group=True)
        proc.wait(timeout=60)
        assert_gone(ranks)  # no orphan rank trains on into the resumed run
    else:
        proc = run_with_fault(cfg, fault, "phases[0].steps=8")
        assert proc.returncode != 0
    assert not (run / "meta" / "DONE.json").exists()
    if (run / "meta" / "checkpoints" / "latest").exists():
        assert_latest_is_complete(run)
    if fault.startswith("sigkill@save"):
        assert (run / "meta" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert shm_segments() <= shm_before, "killed ranks left DeepSpeed shared memory in /dev/shm"
    train(cfg, 2, "phases[0].steps=8")
    assert final_digest(run) == reference["digest"]
    assert log_rows(run) == reference["log"]


@pytest.mark.parametrize(
    ("sig", "where"), [("sigterm", "forward"), ("sigusr1", "backward"), ("sigterm", "save")]
)
def test_signal_anywhere_leaves_a_valid_checkpoint(prepared, tmp_path, sig, where):
    run, cfg = make_run(prepared, tmp_path, save_every=4)
    # rank 1 alone receives the signal: the ranks must still agree to stop together. The deepspeed
    # launcher passes the ranks' exit code 3 (requeue) on; torchrun reports any failure as 1.
    proc = run_with_fault(cfg, f"{sig}@{where}:4:1", "phases[0].steps=50", launcher="deepspeed")
    assert proc.returncode == EXIT_REQUEUE, proc.stdout[-2000:] + proc.stderr[-2000:]
    tag = assert_latest_is_complete(run)
    # a signal during a save lets that save finish; the run then stops after the next step
    expected = 5 if where == "save" else 4
    assert ckpt.step_of(tag) == expected
    assert json.loads((run / "meta" / "checkpoints" / tag / "meta.json").read_text())["step"] == expected


@pytest.fixture(scope="module")
def four_steps(prepared, tmp_path_factory):
    """A 2-rank run stopped after 4 steps (checkpoints at 2 and 4), copied by each damage test."""
    run, cfg = make_run(prepared, tmp_path_factory.mktemp("four_steps"))
    train(cfg, 2, "phases[0].steps=4")
    return run


@pytest.mark.parametrize("damage", ["truncate", "delete", "bitflip"])
def test_damaged_newest_checkpoint_is_detected_and_skipped(prepared, tmp_path, four_steps, damage):
    run, cfg = make_run(prepared, tmp_path)
    shutil.copytree(four_steps / "meta", run / "meta")
    newest = run / "meta" / "checkpoints" / "step_00000004"
    victim = sorted(newest.glob("*optim_states.pt"))[0]
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    elif damage == "delete":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[-100] ^= 0x01
        victim.write_bytes(bytes(data))
    reason = ckpt.check_integrity(newest)
    assert reason is not None and victim.name in reason
    proc = train(cfg, 2, "phases[0].steps=6")
    assert f"skipping step_00000004: {reason}" in proc.stdout
    assert "resumed meta from step_00000002" in proc.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a size-limited tmpfs needs root")
def test_disk_full_while_saving_keeps_previous_checkpoints(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path, keep_last=10)
    train(cfg, 2, "phases[0].steps=2")  # learn how big one checkpoint is
    ckpt_dir = run / "meta" / "checkpoints"
    one = sum(p.stat().st_size for p in (ckpt_dir / "step_00000002").rglob("*") if p.is_file())
    saved = tmp_path / "saved"
    shutil.move(ckpt_dir, saved)
    ckpt_dir.mkdir()
    # room for the existing checkpoint plus half of the next one
    size_kb = (int(one * 1.5) + 4095) // 1024 + 64
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(ckpt_dir)], check=True)
    try:
        for item in saved.iterdir():
            shutil.copytree(item, ckpt_dir / item.name) if item.is_dir() else shutil.copy(
                item, ckpt_dir / item.name
            )
        proc = train(cfg, 2, "phases[0].steps=6", check=False)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert (
            "saving checkpoint" in out
            and "failed" in out
            and "latest valid checkpoint is still step_00000002" in out
        )
        assert (ckpt_dir / "latest").read_text().strip() == "step_00000002"
        assert ckpt.check_integrity(ckpt_dir / "step_00000002") is None
        assert not (ckpt_dir / "step_00000004").exists()
        assert not list(ckpt_dir.glob(".staging-*"))
    finally:
        subprocess.run(["umount", str(ckpt_dir)], check=False)


def test_hung_rank_fails_the_job_naming_it(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path, dist_timeout_s=15)
    start = time.time()
    proc = run_with_fault(cfg, "hang@forward:3:1", "phases[0].steps=8")
    assert proc.returncode != 0
    assert time.time() - start < 240
    out = proc.stdout + proc.stderr
    assert "collective failed on rank 0 in step 3" in out
    assert "rank 1 stopped in step 3 (forward)" in out
    assert "train.dist_timeout_s=15" in out


def test_every_sample_seen_once_across_restarts_on_3_ranks(prepared, tmp_path):
    """One epoch of English on 3 ranks, killed twice: the (chunk) set is covered exactly once."""
    from megameta.data.shards import TokenShard

    shard = TokenShard(prepared["run"] / "shards" / "en" / "train")
    seq = 32
    n_chunks = (shard.n_tokens + shard.n_docs) // (seq - 2)
    per_step = 2 * 3
    steps = n_chunks // per_step
    run, cfg = make_run(prepared, tmp_path, micro_batch_size=2, log_samples=True, save_every=3)
    overrides = (f"phases[0].steps={steps}",)
    for kill_at in (4, 9):
        proc = start_train(cfg, 3, *overrides)
        ranks = kill_when(proc, run, kill_at, signal.SIGKILL, group=True)
        proc.wait(timeout=60)
        assert_gone(ranks)
    train(cfg, 3, *overrides)
    rows = [
        json.loads(line)
        for r in range(3)
        for line in (run / "meta" / "samples" / f"rank{r}.jsonl").read_text().splitlines()
    ]
    samples = sorted(r["sample"] for r in rows)
    assert samples == list(range(steps * per_step))  # no sample lost, none repeated
    chunks = [r["chunk"] for r in rows]
    assert len(set(chunks)) == len(chunks)  # within one epoch every chunk at most once
    assert all(r["epoch"] == 0 for r in rows)
