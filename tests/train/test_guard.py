"""Divergence guard on 2 CPU ranks: NaN and spike faults are skipped on every rank at the same step with
the optimizer state untouched; K bad steps in a row roll back and jump over their data window."""

from __future__ import annotations

import json

import pytest
from helpers import NO_DROPOUT, log_rows, make_run, megameta, train

from megameta import checkpoint as ckpt
from megameta.checkpoint import CheckpointMeta, consolidated_state_dict

pytestmark = pytest.mark.slow

GUARD = ("train.guard.spike_window=2", "train.guard.spike_factor=3", *NO_DROPOUT)


def _weights(run, step):
    return consolidated_state_dict(run / "meta" / "checkpoints" / ckpt.tag_for(step))


def _ranks(precision: str) -> int:
    """2 ranks; fp16 runs on GPUs (NCCL, one GPU per rank), so on a one-GPU machine it runs on 1."""
    import torch

    return 2 if precision != "fp16" or torch.cuda.device_count() >= 2 else 1


@pytest.mark.parametrize(
    "precision", ["bf16", pytest.param("fp16", marks=pytest.mark.gpu)]
)  # gpu: tools/gpu_check.sh
def test_nan_on_one_rank_and_a_spike_are_skipped_with_state_untouched(prepared, tmp_path, precision):
    from deepspeed.accelerator import get_accelerator

    if precision == "fp16" and not get_accelerator().is_fp16_supported():
        pytest.skip("fp16 needs an accelerator that supports it (GPU); this one does not")
    ranks = _ranks(precision)
    run, cfg = make_run(prepared, tmp_path, save_every=1, keep_last=10, precision=precision,
                        deepspeed_config="ds_configs/zero1.json")  # fmt: skip
    proc = train(cfg, ranks, *GUARD, env={"MEGAMETA_FAULT": f"nan@forward:3:{ranks - 1},spike@forward:5"})
    out = proc.stdout
    assert "[guard] step 3 skipped: non-finite loss" in out, out[-3000:]
    assert "[guard] step 5 skipped: loss spike" in out
    per_step = 4 * ranks  # micro-batch 4 per rank
    assert f"samples {2 * per_step}..{3 * per_step - 1} did not update the model" in out  # step 3
    rows = {r["step"]: r for r in log_rows(run)}
    assert [rows[s]["skipped_steps"] for s in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    assert rows[3]["lr"] == rows[2]["lr"] and rows[4]["lr"] != rows[3]["lr"]  # scheduler held on a skip
    for bad in (3, 5):  # a skipped step leaves the fp32 master weights exactly as they were
        before, after = _weights(run, bad - 1), _weights(run, bad)
        assert all(bool((before[k] == after[k]).all()) for k in before), f"step {bad} changed weights"
    good_before, good_after = _weights(run, 3), _weights(run, 4)
    assert any(bool((good_before[k] != good_after[k]).any()) for k in good_before)
    meta = CheckpointMeta.read(run / "meta" / "checkpoints" / ckpt.tag_for(6))
    assert (meta.skipped_steps, meta.rollbacks) == (2, 0)
    shown = megameta("inspect", str(run / "meta")).stdout
    assert "divergence guard: 2 skipped steps, 0 rollbacks" in shown


def test_consecutive_bad_steps_roll_back_and_skip_their_data(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path, deepspeed_config="ds_configs/zero3.json")
    proc = train(cfg, 2, *GUARD, "train.guard.max_bad_steps=2",
                 env={"MEGAMETA_FAULT": "nan@forward:3,nan@forward:4"})  # fmt: skip
    out = proc.stdout
    assert "[guard] steps 3..4 diverged: rollback 1, skipping samples 16..31" in out, out[-3000:]
    assert "[guard] rolled back to step_00000002 (step 2)" in out
    rows = log_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the rolled-back steps' rows are replaced
    assert [r["samples_seen"] for r in rows] == [8, 16, 40, 48, 56, 64]
    assert rows[-1]["rollbacks"] == 1 and rows[-1]["skipped_steps"] == 2
    meta = CheckpointMeta.read(run / "meta" / "checkpoints" / ckpt.tag_for(6))
    assert (meta.skipped_steps, meta.rollbacks, meta.skipped_samples) == (2, 1, [[16, 32]])
    assert json.loads((run / "meta" / "DONE.json").read_text())["step"] == 6


def test_guard_without_faults_changes_nothing(prepared, tmp_path):
    """The guard's collective and optimizer hooks leave a clean run bit for bit as it was."""
    runs = {}
    for enabled in (True, False):
        run, cfg = make_run(prepared, tmp_path, f"guard_{enabled}", deepspeed_config="ds_configs/zero0.json")
        train(cfg, 1, *GUARD, f"train.guard.enabled={str(enabled).lower()}", "phases[0].steps=4")
        runs[enabled] = run
    assert log_rows(runs[True]) == log_rows(runs[False])
    on, off = _weights(runs[True], 4), _weights(runs[False], 4)
    assert all(bool((on[k] == off[k]).all()) for k in on)
