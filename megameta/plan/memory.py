"""Per-GPU memory of a training step: model states per ZeRO stage, activations, checkpoint size.

Pure arithmetic on counts (no torch). Model states follow the ZeRO paper's accounting
(Rajbhandari et al. 2020, section 3.1) for mixed-precision Adam, as DeepSpeed implements it
(and as its estimators ``estimate_zero2_model_states_mem_needs`` /
``estimate_zero3_model_states_mem_needs`` count, which ``tests/plan`` checks within 10%; the
ZeRO-3 one leaves out the 16-bit parameter partition, ``2P/N``, which we count, so we are above it
by that much):

* 16-bit parameters ``2P`` (ZeRO-3: ``2P/N``, plus the gathered working set of the largest
  layer and the one prefetched after it, ``4 * largest_layer``);
* 16-bit gradients ``2P`` (ZeRO-2/3: ``2P/N``);
* fp32 gradient accumulation ``4P/N`` (``data_types.grad_accum_dtype=fp32``, which
  ``render_ds_config`` sets for bf16 under ZeRO >= 1);
* optimizer ``12P`` (fp32 master weights, Adam m and v), ``/N`` under ZeRO >= 1.

In fp32 there is no 16-bit copy and no master copy: parameters ``4P``, gradients ``4P``,
Adam ``8P``. Optimizer offload moves gradients' fp32 side and the optimizer to the host;
parameter offload (ZeRO-3) moves the parameter partition too.

Activations per micro-batch of ``b`` sequences of ``s`` tokens follow Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models", section 4.1), adapted to this
encoder: attention runs through SDPA/flash, so no ``s x s`` score matrix is stored (only the
log-sum-exp, ``4 a s b`` bytes); an ``F``-wide feed-forward replaces their ``4h``. Per layer,
with ``e`` bytes per element of the compute dtype: ``s b (8 h e + 2 F e + 2 h)`` (QKV input, Q,
K, V, attention output, output-projection input, two LayerNorm inputs, the FFN input, the GELU
input and the second linear's input, two 1-byte dropout masks). With activation checkpointing
each layer keeps only its input (``s b h e``) and one layer's full set is alive during its
recomputation. The masked-only head keeps its gathered rows and, independent of the batch, a
fp32 ``[V, h]`` weight-gradient accumulator plus one fp32 logits chunk (see
``megameta.model.encoder._ChunkedLinearCrossEntropy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1 << 30
#: CUDA context, cuBLAS/NCCL workspaces and kernels: memory a process holds before any tensor.
CONTEXT_BYTES = int(1.5 * GIB)
#: Share of the rest kept free for allocator fragmentation and transient peaks.
FRAGMENTATION = 0.10


@dataclass(frozen=True)
class ZeroSetup:
    """What DeepSpeed will do with the model states (read from the rendered DeepSpeed config)."""

    stage: int
    precision: str
    offload_optimizer: bool = False
    offload_param: bool = False
    reduce_bucket: int = 0
    """``zero_optimization.reduce_bucket_size`` in elements (0: not bucketed)."""
    prefetch_bucket: int = 0
    """``zero_optimization.stage3_prefetch_bucket_size`` in elements (ZeRO-3)."""
    overlap_comm: bool = False

    @property
    def elem(self) -> int:
        """Bytes per element of the compute dtype."""
        return 2 if self.precision in ("bf16", "fp16") else 4

    @classmethod
    def from_ds_config(cls, ds: dict, precision: str) -> ZeroSetup:
        zero = ds.get("zero_optimization", {})

        def offloaded(key: str) -> bool:
            return zero.get(key, {}).get("device", "none") not in ("none", None)

        return cls(
            stage=int(zero.get("stage", 0)),
            precision=precision,
            offload_optimizer=offloaded("offload_optimizer"),
            offload_param=offloaded("offload_param"),
            reduce_bucket=int(float(zero.get("reduce_bucket_size", 0) or 0)),
            prefetch_bucket=int(float(zero.get("stage3_prefetch_bucket_size", 0) or 0)),
            overlap_comm=bool(zero.get("overlap_comm", False)),
        )


def model_states(n_params: int, largest_layer: int, z: ZeroSetup, world: int) -> dict[str, int]:
    """Bytes per GPU of parameters, gradients and optimizer states, and bytes per GPU held on the host.

    Returns ``{"params", "grads", "optimizer", "total", "host"}``; ``total`` is the GPU sum.
    """
    p, n, e = n_params, world, z.elem
    low = e == 2
    shard = n if z.stage >= 1 else 1
    params = e * p / n if z.stage >= 3 else e * p
    working = 2 * e * largest_layer if z.stage >= 3 else 0  # the gathered layer + the prefetched one
    grads = e * p / n if z.stage >= 2 else e * p
    grads32 = 4 * p / n if low and z.stage >= 1 else 0
    optimizer = (12 if low else 8) * p / shard
    host = 0.0
    if z.offload_optimizer:
        # Gradients stream to the host bucket by bucket (see buffers()); the step runs there.
        host += optimizer + grads32 + (grads if z.stage >= 2 else 0)
        optimizer, grads32 = 0, 0
        grads = 0 if z.stage >= 2 else grads
    if z.offload_param and z.stage >= 3:
        host += params
        params = 0
    out = {"params": int(params + working), "grads": int(grads + grads32), "optimizer": int(optimizer)}
    out["total"] = sum(out.values())
    out["host"] = int(host)
    return out


def buffers(z: ZeroSetup) -> int:
    """Communication buckets on each GPU: DeepSpeed documents ~4.5x the bucket size with overlap_comm."""
    if z.stage == 0:
        return 0
    bucket = z.elem * z.reduce_bucket * (4.5 if z.overlap_comm else 1.0)
    return int(bucket + (z.elem * z.prefetch_bucket if z.stage >= 3 else 0))


@dataclass(frozen=True)
class Shape:
    """The sizes that activation memory depends on."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    vocab: int
    seq_len: int
    mask_prob: float
    loss_chunk: int
    head_grad_elem: int = 4  # bytes per element of the head's weight gradient: 2 in bf16, else 4


def activations(shape: Shape, micro_batch: int, elem: int, checkpointing: bool) -> dict[str, int]:
    """Bytes of activations kept for backward for one micro-batch, plus the head's working set.

    Returns ``{"layers", "embeddings", "head", "total"}``.
    """
    s, b, h, f = shape.seq_len, micro_batch, shape.hidden, shape.ffn
    per_layer = s * b * (8 * h * elem + 2 * f * elem + 2 * h) + 4 * shape.heads * s * b
    if checkpointing:
        layers = shape.layers * s * b * h * elem + per_layer
    else:
        layers = shape.layers * per_layer
    embeddings = s * b * h * (2 * elem + 1)
    masked = math.ceil(shape.mask_prob * s * b)
    chunk = min(shape.loss_chunk, masked)
    head = (
        5 * masked * h * elem  # gathered rows, dense output, GELU input, LayerNorm output, grad_x
        + shape.head_grad_elem * shape.vocab * h  # decoder-weight gradient, alive from forward to backward
        + chunk * shape.vocab * (4 + elem)  # one fp32 logits chunk and its low-precision softmax grad
    )
    out = {"layers": int(layers), "embeddings": int(embeddings), "head": int(head)}
    out["total"] = sum(out.values())
    return out


def usable_bytes(gpu_gib: float) -> int:
    """Bytes a training process can fill: the device minus context, minus fragmentation headroom."""
    return int((gpu_gib * GIB - CONTEXT_BYTES) * (1 - FRAGMENTATION))


def max_micro_batch(fixed: int, shape: Shape, elem: int, checkpointing: bool, budget: int) -> int:
    """Largest micro-batch whose activations fit in ``budget - fixed`` bytes (0 if none)."""

    def fits(b: int) -> bool:
        return fixed + activations(shape, b, elem, checkpointing)["total"] <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi) and hi < 1 << 20:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


#: Per-checkpoint file overheads measured on DeepSpeed 0.19 checkpoints: each rank's RNG file (torch,
#: numpy and Python generator states) and its optimizer file's metadata, and the model-states
#: file's metadata plus ``meta.json``. Negligible at scale; a tenth of a tiny test model's checkpoint.
PER_RANK_FILE_BYTES = (16 + 8) << 10
PER_CHECKPOINT_FILE_BYTES = 16 << 10


def checkpoint_bytes(n_params: int, z: ZeroSetup, world: int) -> dict[str, int]:
    """Bytes one DeepSpeed checkpoint takes on disk, over all ranks.

    ``weights``: the module's state dict in the compute dtype (ZeRO-3 keeps no full copy: its
    parameters live only in the fp32 partitions). ``optimizer``: fp32 master partitions (when
    training in 16 bits, or under ZeRO >= 1, which steps a flat fp32 copy) plus Adam's m and v.
    ``files``: per-rank RNG state and file metadata.
    """
    p = n_params
    weights = 0 if z.stage >= 3 else z.elem * p
    master = 4 * p if (z.elem == 2 or z.stage >= 1) else 0
    out = {
        "weights": weights,
        "optimizer": master + 8 * p,
        "files": world * PER_RANK_FILE_BYTES + PER_CHECKPOINT_FILE_BYTES,
    }
    out["total"] = sum(out.values())
    return out


def kept_checkpoints(steps: int, save_every: int, keep_last: int, keep_every: int) -> tuple[int, int]:
    """(most checkpoints on disk at once, checkpoints left at the end) of a phase of ``steps`` steps.

    Replays the trainer's schedule: a save every ``save_every`` steps and at the last step, each
    staged next to the kept ones and then pruned to the newest ``keep_last`` plus the multiples of
    ``keep_every`` (``megameta.train.checkpoint.prune``).
    """
    saves = list(range(save_every, steps, save_every)) + [steps]
    kept: list[int] = []
    peak = 0
    for step in saves:
        peak = max(peak, len(kept) + 1)
        kept.append(step)
        kept = [
            t
            for i, t in enumerate(kept)
            if i >= len(kept) - keep_last or (keep_every and t % keep_every == 0)
        ]
    return peak, len(kept)
