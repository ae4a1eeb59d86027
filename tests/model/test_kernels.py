"""Kernel detection and optimizer selection (CPU fallbacks; CUDA checks skip without a GPU)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from megameta import kernels
from megameta.kernels import (
    build_adamw,
    detect_kernels,
    format_kernel_report,
    layer_norm_class,
    resolve_device,
)

KERNELS = {"attention", "layer_norm", "optimizer", "mixed_precision", "compile"}


def test_detect_kernels_on_cpu_reports_torch_fallbacks_with_reasons() -> None:
    report = detect_kernels("cpu")
    assert set(report) == KERNELS
    assert report["attention"]["active"] == "sdpa-cpu"
    assert report["layer_norm"]["active"] == "torch.nn.LayerNorm"
    assert report["optimizer"]["active"] == "torch.optim.AdamW(foreach=True)"
    assert report["mixed_precision"]["active"] in {"bf16", "fp16", "fp32"}
    assert report["compile"]["active"] in {"torch.compile(inductor)", "eager"}
    for name, entry in report.items():
        assert entry["why"] and "\n" not in entry["why"], name
    assert "cpu" in report["layer_norm"]["why"]


def test_unrelated_apex_package_is_not_mistaken_for_nvidia_apex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apex", types.ModuleType("apex"))  # PyPI's unrelated "apex"
    kernels._apex_status.cache_clear()
    try:
        usable, why = kernels._apex_status()
        assert not usable and "apex" in why
        assert layer_norm_class("cuda") is torch.nn.LayerNorm
    finally:
        kernels._apex_status.cache_clear()


def test_format_kernel_report_is_an_aligned_table() -> None:
    text = format_kernel_report(detect_kernels("cpu"))
    lines = text.splitlines()
    assert len(lines) == 2 + len(KERNELS)
    column = lines[0].index("active")
    assert all(line[column - 2 : column] == "  " for line in lines)
    assert "torch.optim.AdamW(foreach=True)" in text


def test_build_adamw_on_cpu_returns_a_foreach_adamw_that_steps() -> None:
    weight = torch.nn.Parameter(torch.ones(4, 3))
    bias = torch.nn.Parameter(torch.zeros(3))
    groups = [{"params": [weight], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.0}]
    opt = build_adamw(groups, lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, device="cpu")
    assert type(opt) is torch.optim.AdamW and opt.defaults["foreach"] is True
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[0]["betas"] == (0.9, 0.98)
    (torch.ones(2, 4) @ weight + bias).sum().backward()
    opt.step()
    assert torch.all(weight < 1.0) and torch.all(bias < 0.0)


def test_resolve_device_auto_none_and_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # named devices pass through unchecked
    for available, expected in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda a=available: a)
        assert resolve_device("auto") == resolve_device(None) == torch.device(expected)


def test_layer_norm_class_on_cpu_is_torch() -> None:
    assert layer_norm_class("cpu") is torch.nn.LayerNorm


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_fused_optimizer_and_flash_capable_attention() -> None:
    report = detect_kernels("cuda")
    assert report["optimizer"]["active"] in {"apex.FusedAdam", "torch.optim.AdamW(fused=True)"}
    assert report["attention"]["active"].startswith("sdpa-")
    p = torch.nn.Parameter(torch.ones(3, device="cuda"))
    opt = build_adamw([p], lr=0.1, device="cuda")
    p.sum().backward()
    opt.step()
    assert torch.all(p < 1.0)
