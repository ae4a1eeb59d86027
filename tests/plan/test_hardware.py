"""The GPU table: device-name matching, the peak override, memory sizes."""

from __future__ import annotations

import pytest

from megameta.errors import ConfigError
from megameta.hardware import GPUS, get_gpu, match_gpu, parse_memory_gib, peak_tflops_for


@pytest.mark.parametrize(
    ("device_name", "key"),
    [
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H200 NVL", "h200-nvl"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("Tesla V100-SXM2-32GB", "v100-32gb"),
        ("h100-sxm", "h100-sxm"),
        ("H100_PCIE", "h100-pcie"),
    ],
)
def test_device_names_match(device_name, key):
    assert match_gpu(device_name).key == key


def test_peaks_and_memory():
    assert peak_tflops_for("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert peak_tflops_for("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops_for("NVIDIA A100-SXM4-80GB", "fp32") == 156.0  # TF32 tensor cores
    assert GPUS["a100-40gb"].memory_gib == 40.0 and GPUS["h200"].memory_gib > 139
    assert not GPUS["v100-32gb"].bf16 and GPUS["h100-sxm"].bf16
    assert match_gpu("NVIDIA GeForce GT 710") is None and peak_tflops_for("Matrox G200", "bf16") is None


def test_override(monkeypatch):
    monkeypatch.setenv("MEGAMETA_PEAK_TFLOPS", "123.5")
    assert peak_tflops_for("Matrox G200") == 123.5
    assert GPUS["h100-sxm"].peak_tflops("bf16") == 123.5


def test_unknown_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="--gpu: unknown GPU 'tpu'"):
        get_gpu("tpu")


@pytest.mark.parametrize(("text", "gib"), [("80GB", 80.0), ("80", 80.0), ("81920MiB", 80.0), ("0.5T", 512.0)])
def test_parse_memory(text, gib):
    assert parse_memory_gib(text) == gib


@pytest.mark.parametrize("text", ["", "eighty", "-1GB", "0GB", "80PB"])
def test_parse_memory_rejects(text):
    with pytest.raises(ConfigError, match="--gpu-memory"):
        parse_memory_gib(text)


def test_metrics_uses_the_table(monkeypatch):
    import torch

    from megameta.train.metrics import peak_tflops

    monkeypatch.delenv("MEGAMETA_PEAK_TFLOPS", raising=False)
    assert peak_tflops(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert peak_tflops(torch.device("cuda", 0)) == 756.0


def test_importing_the_table_does_not_import_torch():
    import subprocess
    import sys

    from helpers import REPO, cli_env

    code = "import sys, megameta.hardware; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=REPO).returncode == 0
