"""tools/gpu_check.sh on a machine without a GPU: says so, exits 0, runs nothing."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from helpers import REPO, cli_env


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi (a GPU machine)"
)
def test_gpu_check_without_gpu_says_so_and_runs_nothing(tmp_path):
    out, site = tmp_path / "out", tmp_path / "site"
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(GPU_CHECK_OUT=str(out), GPU_CHECK_SITE=str(site)),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "needs an NVIDIA GPU" in proc.stdout and "nothing was run" in proc.stdout
    assert proc.stdout.count("\n") == 1 and not proc.stderr
    assert not out.exists() and not site.exists()  # no summary, no wheel install, no run dir
