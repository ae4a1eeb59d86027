"""Kernel detection and optimizer selection (CPU fallbacks; CUDA checks skip without a GPU)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from megameta import kernels
from megameta.errors import ConfigError
from megameta.kernels import (
    build_adamw,
    detect_kernels,
    format_kernel_report,
    layer_norm_class,
    resolve_device,
)

KERNELS = {"attention", "layer_norm", "optimizer", "dropout", "mixed_precision", "compile"}
CPU_ADAMW = (
    "torch.optim.AdamW(fused=True)"
    if kernels._torch_fused_adamw(torch.device("cpu"))
    else "torch.optim.AdamW(foreach=True)"
)


def test_detect_kernels_on_cpu_reports_torch_fallbacks_with_reasons() -> None:
    report = detect_kernels("cpu")
    assert set(report) == KERNELS
    assert report["attention"]["active"] == "sdpa-cpu"
    assert report["layer_norm"]["active"] == "torch.nn.LayerNorm"
    assert report["optimizer"]["active"] == CPU_ADAMW
    assert report["dropout"]["active"] == "megameta 16-bit mask"
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
    assert CPU_ADAMW in text


def test_build_adamw_on_cpu_returns_the_reported_adamw_that_steps() -> None:
    weight = torch.nn.Parameter(torch.ones(4, 3))
    bias = torch.nn.Parameter(torch.zeros(3))
    groups = [{"params": [weight], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.0}]
    opt = build_adamw(groups, lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, device="cpu")
    assert type(opt) is torch.optim.AdamW
    fused = kernels._torch_fused_adamw(torch.device("cpu"))
    assert fused == (tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 4))
    assert (opt.defaults["fused"], opt.defaults["foreach"]) == ((True, None) if fused else (None, True))
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
    assert report["optimizer"]["active"] in kernels.ADAMW_KERNELS.values()
    assert report["optimizer"]["why"].startswith("fastest measured per step: ")
    assert set(kernels._MEASURED["cuda"][1]) >= {"torch-fused", "torch-foreach"}
    assert report["attention"]["active"].startswith("sdpa-")
    p = torch.nn.Parameter(torch.ones(3, device="cuda"))
    opt = build_adamw([p], lr=0.1, device="cuda")
    p.sum().backward()
    opt.step()
    assert torch.all(p < 1.0)


def test_adamw_kernel_names_match_the_config_choices() -> None:
    from megameta.train.config import ADAMW_KERNELS

    assert ADAMW_KERNELS == ("auto", *kernels.ADAMW_KERNELS)


def test_build_adamw_named_kernel_or_a_clear_refusal() -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = build_adamw(params, lr=0.1, device="cpu", kernel="torch-foreach")
    assert type(opt) is torch.optim.AdamW and opt.defaults["foreach"] is True
    for kernel, reason in (
        ("apex", "device is cpu"),
        ("deepspeed", "device is cpu"),
        ("adam8bit", "must be"),
    ):
        with pytest.raises(ConfigError, match=f"^optim.kernel: .*{reason}"):
            build_adamw(params, lr=0.1, device="cpu", kernel=kernel)


def test_measure_adamw_times_each_kernel_that_runs_here() -> None:
    times = kernels.measure_adamw("cpu", numel=1 << 12, tensors=4, steps=2)
    usable = {k for k, why in kernels.adamw_kernels("cpu").items() if why is None}
    assert set(times) == usable and "torch-foreach" in times
    assert all(ms > 0 for ms in times.values())


def test_auto_on_cuda_takes_the_fastest_measured_kernel_and_reports_the_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The choice logic, without a GPU: measurement is stubbed, and it runs once per process."""
    calls = []

    def fake_measure(device):
        calls.append(device)
        return {"torch-fused": 3.0, "torch-foreach": 7.5, "apex": 2.5}

    monkeypatch.setattr(kernels, "measure_adamw", fake_measure)
    monkeypatch.setattr(kernels, "_MEASURED", {})
    assert kernels.choose_adamw("cuda") == "apex" == kernels.choose_adamw("cuda")
    assert len(calls) == 1
    report = kernels._optimizer_choice(torch.device("cuda"), "auto")
    assert report["active"] == "apex.FusedAdam"
    times = "torch-fused 3.00 ms, torch-foreach 7.50 ms, apex 2.50 ms"
    assert report["why"] == f"fastest measured per step: {times}"
    # A named kernel is reported as configured, with no measurement (and no collective).
    named = kernels._optimizer_choice(torch.device("cuda"), "torch-foreach")
    assert named == {"active": "torch.optim.AdamW(foreach=True)", "why": "optim.kernel: torch-foreach"}
    # Under ZeRO-Offload (None) DeepSpeed's CPU Adam steps: nothing is measured, even before any choice.
    monkeypatch.setattr(kernels, "_MEASURED", {})
    offload = kernels._optimizer_choice(torch.device("cuda"), None)
    assert offload["active"] == "deepspeed.ops.adam.DeepSpeedCPUAdam" and "ZeRO-Offload" in offload["why"]
    assert len(calls) == 1 and kernels._MEASURED == {}
    assert kernels.choose_adamw("cpu") == (
        "torch-fused" if kernels._torch_fused_adamw(torch.device("cpu")) else "torch-foreach"
    )


def test_build_adamw_fused_and_foreach_take_the_same_step() -> None:
    """The fused CPU kernel is the same AdamW as the multi-tensor one, to rounding."""
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(5)]
    results = []
    for flag in ("fused", "foreach"):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = torch.optim.AdamW(
            params, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, **{flag: True}
        )
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        results.append(params)
    for fused, foreach, before in zip(*results, start):
        torch.testing.assert_close(fused, foreach, rtol=1e-6, atol=1e-7)
        assert not torch.equal(fused, before)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_dropout_drops_at_rate_p_scales_to_the_same_mean_and_masks_the_gradient(p: float) -> None:
    levels = kernels._MASK_LEVELS
    drop = round(p * levels)
    x = torch.full((256, 1024), 2.0, requires_grad=True)  # n = 262,144
    torch.manual_seed(3)
    y = kernels.dropout(x, p)
    kept = y != 0
    scale = levels / (levels - drop)
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0 * scale))
    # Every element, and each of the four 16-bit lanes cut from one 64-bit draw, keeps at the
    # rate 1 - drop / 2^16 (6 standard deviations: fails about once in 10^9 runs).
    keep_rate = 1 - drop / levels
    for lane, share in [(None, kept.flatten())] + [(i, kept.flatten()[i::4]) for i in range(4)]:
        sigma = (keep_rate * (1 - keep_rate) / share.numel()) ** 0.5
        assert abs(share.float().mean().item() - keep_rate) < 6 * sigma, lane
    # Inverted dropout keeps the expectation: the mean stays 2.0 to sampling error.
    assert abs(y.mean().item() - 2.0) < 6 * 2.0 * scale * (keep_rate * (1 - keep_rate) / x.numel()) ** 0.5
    y.backward(torch.full_like(y, 3.0))
    assert torch.equal(x.grad, torch.where(kept, 3.0 * scale, 0.0))
    torch.manual_seed(3)
    assert torch.equal(kernels.dropout(x, p), y)  # the seeded default generator decides
    assert not torch.equal(kernels.dropout(x, p), y)


def test_cpu_dropout_keeps_dtype_passes_eval_through_and_saves_a_bool_mask() -> None:
    x = torch.randn(8, 16, dtype=torch.bfloat16, requires_grad=True)
    assert kernels.dropout(x, 0.1, training=False) is x and kernels.dropout(x, 0.0) is x
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = kernels.dropout(x, 0.3)
    assert y.dtype == torch.bfloat16 and [t.dtype for t in saved] == [torch.bool]
    module = kernels.Dropout(0.3)
    assert module(x).dtype == torch.bfloat16 and module.eval()(x) is x
    # A probability 16 bits cannot express goes to torch's dropout rather than being rounded away.
    torch.manual_seed(0)
    tiny = kernels.dropout(torch.ones(4), 1e-6)
    torch.manual_seed(0)
    assert torch.equal(tiny, torch.nn.functional.dropout(torch.ones(4), 1e-6))
