"""No host-device synchronization inside a training micro-step: real training steps run with the
syncing tensor methods made to fail (``sync_probe.py``); on CUDA also under sync-debug mode "error"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, cli_env, make_run

PROBE = Path(__file__).with_name("sync_probe.py")


def _probe(prepared, tmp_path, *mode: str) -> subprocess.CompletedProcess:
    run, cfg_path = make_run(prepared, tmp_path, grad_accum=2, log_every=3, eval_every=3)
    cfg = yaml.safe_load(cfg_path.read_text())
    # Three languages, so the per-language sums are exercised; 4 steps x 2 micro-batches.
    cfg["phases"] = [{"name": "meta", "langs": ["en", "fr", "es"], "steps": 4}]
    cfg_path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, str(PROBE), str(cfg_path), "meta", *mode], capture_output=True,
                          text=True, env=cli_env(), cwd=REPO, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_training_micro_steps_do_not_synchronize(prepared, tmp_path):
    proc = _probe(prepared, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "micro-steps checked: 8" in proc.stdout
    assert "meta done: 4 steps" in proc.stdout


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode")
def test_training_micro_steps_do_not_synchronize_on_cuda(prepared, tmp_path):
    proc = _probe(prepared, tmp_path, "cuda")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "micro-steps checked: 8" in proc.stdout
