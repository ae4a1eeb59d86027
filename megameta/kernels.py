"""Which fast kernels this process will use, and the optimizer that goes with them.

``detect_kernels`` answers, per kernel family, what is active and why (printed by
``megameta inspect --env`` through ``format_kernel_report``); ``build_adamw`` and
``layer_norm_class`` apply the same choices. NVIDIA apex is optional and not on PyPI (the PyPI
package called ``apex`` is unrelated), so it counts only if its CUDA extensions import.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


@functools.cache
def _apex_status() -> tuple[bool, str]:
    """(usable, reason): NVIDIA apex with its compiled CUDA extensions importable."""
    try:
        importlib.import_module("apex.optimizers")
        importlib.import_module("apex.normalization")
    except Exception as exc:  # an unrelated PyPI "apex" fails here too
        return False, f"NVIDIA apex not importable ({type(exc).__name__})"
    for ext in ("amp_C", "fused_layer_norm_cuda"):
        try:
            importlib.import_module(ext)
        except Exception:
            return False, f"apex found but its CUDA extension {ext} is missing"
    return True, "NVIDIA apex with CUDA extensions"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The device a run asks for: ``None`` or ``"auto"`` -> CUDA when available, else CPU;
    anything else goes to `torch.device` (``"cpu"``, ``"cuda:1"``, a `torch.device`)."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def layer_norm_class(device: torch.device | str | None = None) -> type[nn.Module]:
    """apex ``FusedLayerNorm`` on CUDA when apex is usable, else ``torch.nn.LayerNorm``.

    Both take ``(normalized_shape, eps=...)`` and hold ``weight``/``bias``, so state dicts match.
    """
    if resolve_device(device).type == "cuda" and _apex_status()[0]:
        from apex.normalization import FusedLayerNorm

        return FusedLayerNorm
    return nn.LayerNorm


def _attention(dev: torch.device) -> dict[str, str]:
    if dev.type != "cuda":
        return {"active": "sdpa-cpu", "why": f"device is {dev.type}: SDPA uses its CPU flash/math kernels"}
    from torch.backends import cuda as bc

    if bc.flash_sdp_enabled() and bc.is_flash_attention_available():
        major, _ = torch.cuda.get_device_capability(dev)
        if major >= 8:
            return {"active": "sdpa-flash", "why": f"CUDA sm{major}x: flash attention (unpadded batches)"}
    if bc.mem_efficient_sdp_enabled():
        return {"active": "sdpa-mem-efficient", "why": "flash unavailable on this GPU/build"}
    return {"active": "sdpa-math", "why": "fused SDPA backends disabled"}


def _optimizer_choice(dev: torch.device) -> dict[str, str]:
    if dev.type == "cuda":
        ok, why = _apex_status()
        if ok:
            return {"active": "apex.FusedAdam", "why": why}
        return {"active": "torch.optim.AdamW(fused=True)", "why": f"CUDA device; {why}"}
    return {"active": "torch.optim.AdamW(foreach=True)", "why": f"device is {dev.type}: no fused Adam kernel"}


def _mixed_precision() -> dict[str, str]:
    try:
        from deepspeed.accelerator import get_accelerator

        acc = get_accelerator()
        bf16, fp16, name = acc.is_bf16_supported(), acc.is_fp16_supported(), acc.device_name()
    except Exception as exc:
        return {"active": "fp32", "why": f"deepspeed accelerator unavailable ({type(exc).__name__})"}
    active = "bf16" if bf16 else "fp16" if fp16 else "fp32"
    return {"active": active, "why": f"deepspeed {name} accelerator: bf16={bf16}, fp16={fp16}"}


def _compile() -> dict[str, str]:
    try:
        importlib.import_module("torch._inductor")
    except Exception as exc:
        return {"active": "eager", "why": f"inductor not importable ({type(exc).__name__})"}
    return {"active": "torch.compile(inductor)", "why": f"torch {torch.__version__} with inductor"}


def detect_kernels(device: torch.device | str | None = None) -> dict[str, dict[str, str]]:
    """Kernel choices for ``device`` (default: CUDA if available, else CPU).

    Returns ``{kernel: {"active": name, "why": one-line reason}}`` for the kernels
    ``attention``, ``layer_norm``, ``optimizer``, ``mixed_precision`` and ``compile``.
    """
    dev = resolve_device(device)
    apex_ok, apex_why = _apex_status()
    if dev.type == "cuda" and apex_ok:
        norm = {"active": "apex.FusedLayerNorm", "why": apex_why}
    else:
        reason = apex_why if dev.type == "cuda" else f"device is {dev.type}"
        norm = {"active": "torch.nn.LayerNorm", "why": reason}
    return {
        "attention": _attention(dev),
        "layer_norm": norm,
        "optimizer": _optimizer_choice(dev),
        "mixed_precision": _mixed_precision(),
        "compile": _compile(),
    }


def build_adamw(
    param_groups: Iterable[Any],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    device: torch.device | str | None = None,
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) with the fastest kernel for ``device``: apex FusedAdam on
    CUDA with apex, else torch's fused CUDA AdamW, else torch's multi-tensor (foreach) AdamW."""
    dev = resolve_device(device)
    kwargs = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
    if dev.type == "cuda" and _apex_status()[0]:
        from apex.optimizers import FusedAdam

        return FusedAdam(param_groups, adam_w_mode=True, **kwargs)
    if dev.type == "cuda":
        return torch.optim.AdamW(param_groups, fused=True, **kwargs)
    return torch.optim.AdamW(param_groups, foreach=True, **kwargs)


def format_kernel_report(report: dict[str, dict[str, str]]) -> str:
    """Render ``detect_kernels()`` as an aligned three-column text table."""
    rows = [("kernel", "active", "why")] + [(k, v["active"], v["why"]) for k, v in report.items()]
    w0, w1 = (max(len(r[i]) for r in rows) for i in range(2))
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * max(len(r[2]) for r in rows)}")
    return "\n".join(lines)
