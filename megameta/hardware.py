"""GPU facts in one table: dense peak TFLOP/s per precision and memory, by device name.

Used for MFU in training logs (``megameta.train.metrics``), by ``bench/gpu_throughput.py`` and by
``megameta plan``. Nothing here imports torch: a login node plans without it.

Peaks are the vendor's dense (no 2:4 sparsity) tensor-core numbers at boost clock, from the
NVIDIA A100 / H100 / H200 data sheets; ``tf32`` is what fp32 training gets with TF32 matmuls
enabled, ``fp32`` the plain CUDA-core rate. Memory is what ``nvidia-smi`` reports, in GiB.
``MEGAMETA_PEAK_TFLOPS`` overrides the peak for every lookup (an unlisted or throttled part).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from megameta.errors import ConfigError

PEAK_ENV = "MEGAMETA_PEAK_TFLOPS"


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. TFLOP/s are dense peaks; ``bf16`` False where the part has no bf16 tensor cores."""

    key: str
    """Short name accepted by ``megameta plan --gpu`` (e.g. ``h100-sxm``)."""
    name: str
    """Human-readable name."""
    bf16_tflops: float
    """Dense bf16 (and fp16) tensor-core peak; fp16 peak for parts without bf16."""
    tf32_tflops: float
    """Dense TF32 tensor-core peak (fp32 training with TF32 matmuls)."""
    fp32_tflops: float
    """Plain fp32 peak (CUDA cores)."""
    memory_gib: float
    """Device memory as the driver reports it."""
    bf16: bool = True
    """Whether the part computes in bf16."""

    def peak_tflops(self, precision: str = "bf16") -> float:
        """Peak for a training precision (bf16/fp16 -> tensor cores, fp32 -> TF32), or the env override."""
        if PEAK_ENV in os.environ:
            return float(os.environ[PEAK_ENV])
        return self.bf16_tflops if precision in ("bf16", "fp16") else self.tf32_tflops


# Ordered most specific first: each pattern is matched (case-insensitively) against
# torch.cuda.get_device_name() strings such as "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe",
# "NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe", "NVIDIA H200", "Tesla V100-SXM2-32GB".
_TABLE: list[tuple[str, GpuSpec]] = [
    (r"GH200", GpuSpec("gh200", "NVIDIA GH200", 989.0, 494.7, 67.0, 95.0)),
    (r"H200 NVL", GpuSpec("h200-nvl", "NVIDIA H200 NVL", 835.0, 417.5, 60.0, 140.4)),
    (r"H200", GpuSpec("h200", "NVIDIA H200 (SXM)", 989.0, 494.7, 67.0, 140.4)),
    (r"H100 NVL", GpuSpec("h100-nvl", "NVIDIA H100 NVL", 835.0, 417.5, 60.0, 93.6)),
    (r"H100.*PCIe", GpuSpec("h100-pcie", "NVIDIA H100 PCIe", 756.0, 378.0, 51.0, 79.6)),
    (r"H100", GpuSpec("h100-sxm", "NVIDIA H100 SXM", 989.0, 494.7, 67.0, 79.6)),
    (r"A100.*80", GpuSpec("a100-80gb", "NVIDIA A100 80GB", 312.0, 156.0, 19.5, 80.0)),
    (r"A100", GpuSpec("a100-40gb", "NVIDIA A100 40GB", 312.0, 156.0, 19.5, 40.0)),
    (r"L40S", GpuSpec("l40s", "NVIDIA L40S", 362.0, 183.0, 91.6, 44.5)),
    (r"A10\b", GpuSpec("a10", "NVIDIA A10", 125.0, 62.5, 31.2, 22.5)),
    (r"L4\b", GpuSpec("l4", "NVIDIA L4", 121.0, 60.0, 30.3, 22.5)),
    (r"V100.*32", GpuSpec("v100-32gb", "NVIDIA V100 32GB", 125.0, 15.7, 15.7, 32.0, bf16=False)),
    (r"V100", GpuSpec("v100-16gb", "NVIDIA V100 16GB", 125.0, 15.7, 15.7, 16.0, bf16=False)),
]
GPUS: dict[str, GpuSpec] = {spec.key: spec for _, spec in _TABLE}


def match_gpu(device_name: str) -> GpuSpec | None:
    """The spec for a ``torch.cuda.get_device_name()`` string or a table key; None when unknown."""
    key = device_name.strip().lower()
    if key in GPUS:
        return GPUS[key]
    # Keys written loosely ("H100-SXM", "a100_80gb") match the table too.
    loose = re.sub(r"[\s_]+", "-", key)
    if loose in GPUS:
        return GPUS[loose]
    for pattern, spec in _TABLE:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return spec
    return None


def get_gpu(name: str) -> GpuSpec:
    """Like :func:`match_gpu` but raises ConfigError listing the known names."""
    spec = match_gpu(name)
    if spec is None:
        raise ConfigError(f"--gpu: unknown GPU {name!r} (known: {', '.join(GPUS)}; or set {PEAK_ENV})")
    return spec


def peak_tflops_for(device_name: str, precision: str = "bf16") -> float | None:
    """Dense peak TFLOP/s of a named device for ``precision``; the env override wins; None if unknown."""
    if PEAK_ENV in os.environ:
        return float(os.environ[PEAK_ENV])
    spec = match_gpu(device_name)
    return spec.peak_tflops(precision) if spec else None


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(gib|gb|g|mib|mb|m|tib|tb|t)?\s*$", re.IGNORECASE)


def parse_memory_gib(text: str, field: str = "--gpu-memory") -> float:
    """``80GB``, ``80GiB``, ``80`` (GiB), ``81920MiB`` -> GiB. GB is read as GiB, as GPU memory is sold.

    Raises ConfigError naming ``field`` for anything else.
    """
    m = _SIZE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{field}: expected a size such as 80GB or 81920MiB, got {text!r}")
    value, unit = float(m.group(1)), (m.group(2) or "g").lower()[0]
    return value * {"m": 1 / 1024, "g": 1.0, "t": 1024.0}[unit]
