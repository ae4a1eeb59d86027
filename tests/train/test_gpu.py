"""GPU-only training checks (skip on CPU): fp16 with dynamic loss scaling, TF32 in fp32 runs."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import NO_DROPOUT, log_rows, make_run, megameta

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (fp16 and TF32 are GPU features)"
    ),
]


def test_fp16_trains_with_dynamic_loss_scaling(prepared, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, cfg = make_run(prepared, tmp_path, precision="fp16")
    proc = megameta("train", "--config", str(cfg), "--phase", "meta", *NO_DROPOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [r["loss"] for r in log_rows(run)]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    events = EventAccumulator(str(run / "meta" / "tensorboard")).Reload()
    scales = [e.value for e in events.Scalars("train/loss_scale")]
    assert scales and all(s >= 1 for s in scales)  # DeepSpeed's dynamic scaler, starting at 2^16


def test_fp32_uses_tf32_matmuls_on_ampere_unless_switched_off(prepared, tmp_path):
    ampere = torch.cuda.get_device_capability()[0] >= 8
    for tf32 in (True, False):
        run, cfg = make_run(prepared, tmp_path, f"tf32_{tf32}", precision="fp32", tf32=tf32)
        proc = megameta("train", "--config", str(cfg), "--phase", "meta", "phases[0].steps=2")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("(TF32 matmuls)" in proc.stdout) == (tf32 and ampere)
