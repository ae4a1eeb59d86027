"""Which fast kernels this process will use, and the optimizer that goes with them.

``detect_kernels`` answers, per kernel family, what is active and why (printed by
``megameta inspect --env`` through ``format_kernel_report``); ``build_adamw``,
``layer_norm_class`` and ``dropout`` apply the same choices. NVIDIA apex is optional and not on
PyPI (the PyPI package called ``apex`` is unrelated), so it counts only if its CUDA extensions
import.
"""

from __future__ import annotations

import functools
import importlib
import shutil
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from megameta.errors import ConfigError


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


_MASK_LEVELS = 1 << 16  # a CPU dropout mask draws 16 random bits per element
_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch < 2.3 lacks it


class _CPUDropout(torch.autograd.Function):
    """Inverted dropout whose mask is 16 random bits per element, compared with a threshold.

    torch's CPU dropout draws each element with ``bernoulli_``, one generator call per element:
    measured at ~10% of a small model's CPU training step. Four elements' bits come from one
    64-bit draw of the same (default, seeded, checkpointed) generator, ~5x faster for the mask
    alone. The drop probability is rounded to a multiple of 2^-16 (FlashAttention rounds its to
    1/256) and kept values are scaled by the inverse of the keep probability actually used, so the
    expectation is exactly the input's. The saved mask is bool: 1 byte per element, not 4.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, drop: int) -> torch.Tensor:
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        keep = (bits.view(torch.int16)[:n] >= drop - _MASK_LEVELS // 2).view(x.shape)
        ctx.scale = _MASK_LEVELS / (_MASK_LEVELS - drop)
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the faster mask of `_CPUDropout` on CPU.

    CUDA (torch's fused Philox kernel), ``torch.compile`` (inductor generates its own) and a ``p``
    too close to 0 or 1 for 16 bits go to ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    drop = round(p * _MASK_LEVELS)
    if x.device.type != "cpu" or not 0 < drop < _MASK_LEVELS or _compiling():
        return F.dropout(x, p, training=True)
    return _CPUDropout.apply(x, drop)


class Dropout(nn.Dropout):
    """``nn.Dropout`` that goes through `dropout` (the faster CPU mask)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


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


#: ``optim.kernel`` values other than "auto", and the class each builds.
ADAMW_KERNELS = {
    "apex": "apex.FusedAdam",
    "deepspeed": "deepspeed.ops.adam.FusedAdam",
    "torch-fused": "torch.optim.AdamW(fused=True)",
    "torch-foreach": "torch.optim.AdamW(foreach=True)",
}
#: device type -> (kernel chosen by measurement, {kernel: ms per step}); filled by `choose_adamw`.
_MEASURED: dict[str, tuple[str, dict[str, float]]] = {}


def adamw_kernels(device: torch.device | str | None = None) -> dict[str, str | None]:
    """Each AdamW kernel of `ADAMW_KERNELS` on ``device``: None when it runs here, else why not."""
    dev = resolve_device(device)
    fused = (
        None
        if dev.type == "cuda" or _torch_fused_adamw(dev)
        else f"torch {torch.__version__} has no fused {dev.type} AdamW"
    )
    if dev.type != "cuda":
        off = f"device is {dev.type}"
        return {"apex": off, "deepspeed": off, "torch-fused": fused, "torch-foreach": None}
    apex_ok, apex_why = _apex_status()
    return {
        "apex": None if apex_ok else apex_why,
        "deepspeed": _deepspeed_fused_adam()[1],
        "torch-fused": fused,
        "torch-foreach": None,
    }


@functools.cache
def _deepspeed_fused_adam() -> tuple[bool, str | None]:
    """(prebuilt, why not usable): DeepSpeed's FusedAdam op, prebuilt at install or JIT-built by nvcc."""
    try:
        from deepspeed.git_version_info import installed_ops
    except Exception as exc:
        return False, f"deepspeed not importable ({type(exc).__name__})"
    if installed_ops.get("fused_adam"):
        return True, None
    if shutil.which("nvcc"):
        return False, None  # JIT-built on first use: a minute or more, so "auto" does not try it
    return (
        False,
        "DeepSpeed's fused_adam op is not prebuilt and nvcc is missing (DS_BUILD_FUSED_ADAM=1 at install)",
    )


def _make_adamw(kernel: str, param_groups: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    if kernel == "apex":
        from apex.optimizers import FusedAdam

        return FusedAdam(param_groups, adam_w_mode=True, **kwargs)
    if kernel == "deepspeed":
        from deepspeed.ops.adam import FusedAdam

        return FusedAdam(param_groups, adam_w_mode=True, **kwargs)
    return torch.optim.AdamW(
        param_groups, **{"fused" if kernel == "torch-fused" else "foreach": True}, **kwargs
    )


def measure_adamw(
    device: torch.device | str | None = None, numel: int = 1 << 24, tensors: int = 64, steps: int = 5
) -> dict[str, float]:
    """Milliseconds per step (median of ``steps``, after two warm-up steps) of each AdamW kernel that
    `choose_adamw` may pick on ``device``, on ``tensors`` fp32 parameters of ``numel`` elements in all
    (half in one tensor, like a vocabulary embedding; the rest in equal shares)."""
    import statistics
    import time

    dev = resolve_device(device)
    sizes = [numel // 2] + [max(1, numel // 2 // (tensors - 1))] * (tensors - 1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    usable = adamw_kernels(dev)
    times = {}
    for kernel in ADAMW_KERNELS:
        if usable[kernel] is not None or (kernel == "deepspeed" and not _deepspeed_fused_adam()[0]):
            continue
        params = [torch.zeros(n, device=dev, requires_grad=True) for n in sizes]
        for p in params:
            p.grad = torch.full_like(p, 1e-3)
        opt = _make_adamw(kernel, params, lr=1e-4, weight_decay=0.01)
        samples = []
        for i in range(2 + steps):
            sync()
            start = time.perf_counter()
            opt.step()
            sync()
            if i >= 2:
                samples.append((time.perf_counter() - start) * 1e3)
        times[kernel] = statistics.median(samples)
        del opt, params
    return times


def choose_adamw(device: torch.device | str | None = None, agree: bool = True) -> str:
    """The AdamW kernel that ``optim.kernel: auto`` uses on ``device``.

    CUDA: the fastest by `measure_adamw`, measured once per process. With ``agree`` every rank takes
    rank 0's choice (a broadcast, when torch.distributed is initialised: all ranks must call), so
    replicated parameters stay equal. Other devices: torch's fused AdamW where torch has it (CPU:
    4.6 vs 16.0 ms per step of the bench model, BENCHMARKS.md), else the multi-tensor one; no
    timing, so a CPU run always takes the same kernel and stays bit-for-bit reproducible.
    """
    dev = resolve_device(device)
    if dev.type != "cuda":
        return "torch-fused" if adamw_kernels(dev)["torch-fused"] is None else "torch-foreach"
    if dev.type not in _MEASURED:
        times = measure_adamw(dev)
        choice = [min(times, key=times.get)]
        if agree and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(choice, src=0)
        _MEASURED[dev.type] = (choice[0], times)
    return _MEASURED[dev.type][0]


def _optimizer_choice(dev: torch.device, kernel: str | None) -> dict[str, str]:
    if kernel is None:
        return {
            "active": "deepspeed.ops.adam.DeepSpeedCPUAdam",
            "why": "ZeRO-Offload steps the optimizer on the CPU",
        }
    if kernel != "auto":
        return {"active": ADAMW_KERNELS[kernel], "why": f"optim.kernel: {kernel}"}
    kernel = choose_adamw(dev, agree=False)  # after build_adamw's agreed choice, or a lone process
    if dev.type == "cuda":
        times = ", ".join(f"{k} {ms:.2f} ms" for k, ms in _MEASURED[dev.type][1].items())
        return {"active": ADAMW_KERNELS[kernel], "why": f"fastest measured per step: {times}"}
    if kernel == "torch-fused":
        return {"active": ADAMW_KERNELS[kernel], "why": f"device is {dev.type}: torch's fused kernel"}
    return {"active": ADAMW_KERNELS[kernel], "why": adamw_kernels(dev)["torch-fused"]}


@functools.cache
def _torch_fused_adamw(dev: torch.device) -> bool:
    """Whether torch's fused AdamW runs on ``dev``'s type (CPU since torch 2.4)."""
    try:
        torch.optim.AdamW([torch.zeros(1, device=dev.type, requires_grad=True)], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def _dropout(dev: torch.device) -> dict[str, str]:
    if dev.type == "cpu":
        why = "device is cpu: 16-bit masks cut from 64-bit draws (torch draws per element)"
        return {"active": "megameta 16-bit mask", "why": why}
    return {"active": "torch dropout", "why": f"device is {dev.type}: torch's fused kernel"}


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


def detect_kernels(
    device: torch.device | str | None = None, adamw: str | None = "auto"
) -> dict[str, dict[str, str]]:
    """Kernel choices for ``device`` (default: CUDA if available, else CPU) and ``optim.kernel``
    ``adamw`` (None: ZeRO-Offload, whose CPU Adam is not ours to choose or time). Never a
    collective: call it after `build_adamw` for the choice the ranks agreed on.

    Returns ``{kernel: {"active": name, "why": one-line reason}}`` for the kernels
    ``attention``, ``layer_norm``, ``optimizer``, ``dropout``, ``mixed_precision`` and ``compile``.
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
        "optimizer": _optimizer_choice(dev, adamw),
        "dropout": _dropout(dev),
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
    kernel: str = "auto",
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) with ``kernel``, one of `ADAMW_KERNELS` or "auto" (`choose_adamw`:
    measured on CUDA, torch's fused AdamW on CPU where torch has it). A kernel that cannot run here
    raises ConfigError naming ``optim.kernel`` and the reason."""
    dev = resolve_device(device)
    if kernel == "auto":
        kernel = choose_adamw(dev)
    elif kernel not in ADAMW_KERNELS:
        raise ConfigError(f"optim.kernel: must be auto or one of {', '.join(ADAMW_KERNELS)}, got {kernel!r}")
    elif (why := adamw_kernels(dev)[kernel]) is not None:
        raise ConfigError(f"optim.kernel: {kernel} cannot run here: {why}")
    return _make_adamw(kernel, param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def format_kernel_report(report: dict[str, dict[str, str]]) -> str:
    """Render ``detect_kernels()`` as an aligned three-column text table."""
    rows = [("kernel", "active", "why")] + [(k, v["active"], v["why"]) for k, v in report.items()]
    w0, w1 = (max(len(r[i]) for r in rows) for i in range(2))
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * max(len(r[2]) for r in rows)}")
    return "\n".join(lines)
