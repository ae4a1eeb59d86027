"""Config of training: AdamW and its schedule, batching, precision, DeepSpeed, checkpoints, logging, launch.

Sections of :class:`megameta.config.RunConfig` (``optim``, ``train``, ``launch``); loading them
imports no torch. Choices come from the registries that act on them, so a new entry there is valid here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from megameta.configtools import check
from megameta.launch import LAUNCHERS as LAUNCHER_REGISTRY
from megameta.train.guard import GuardConfig
from megameta.train.schedule import SCHEDULES as SCHEDULE_REGISTRY

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = tuple(SCHEDULE_REGISTRY)
LAUNCHERS = tuple(LAUNCHER_REGISTRY)
#: ``optim.kernel``: "auto" and the names of ``megameta.kernels.ADAMW_KERNELS``, repeated here because
#: that module imports torch (``tests/model/test_kernels.py`` keeps the two equal).
ADAMW_KERNELS = ("auto", "apex", "deepspeed", "torch-fused", "torch-foreach")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (values per phase can override lr and warmup)."""

    lr: float = 5e-4
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """Adam betas (XLM-R: 0.9, 0.98)."""
    eps: float = 1e-6
    """Adam epsilon."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to biases and LayerNorm weights."""
    grad_clip: float = 1.0
    """Global gradient-norm clipping (0 disables)."""
    warmup_steps: int = 100
    """Linear warm-up steps from 0 to ``lr``."""
    schedule: str = "linear"
    """Decay after warm-up: linear, cosine or constant."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    kernel: str = "auto"
    """AdamW kernel: auto (on GPU the fastest of apex, DeepSpeed's FusedAdam and torch's fused and
    multi-tensor AdamW, measured at start-up; on CPU torch's fused AdamW), or one of apex, deepspeed,
    torch-fused, torch-foreach. ZeRO-Offload always steps DeepSpeed's CPU Adam."""

    def validate(self, path: str) -> None:
        check(self.lr > 0, f"{path}.lr", f"must be > 0, got {self.lr}")
        check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"{path}.betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        check(self.eps > 0, f"{path}.eps", f"must be > 0, got {self.eps}")
        check(self.weight_decay >= 0, f"{path}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.grad_clip >= 0, f"{path}.grad_clip", f"must be >= 0, got {self.grad_clip}")
        check(self.warmup_steps >= 0, f"{path}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(
            self.schedule in SCHEDULES,
            f"{path}.schedule",
            f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        check(
            0 <= self.min_lr_ratio <= 1, f"{path}.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}"
        )
        check(
            self.kernel in ADAMW_KERNELS,
            f"{path}.kernel",
            f"must be one of {', '.join(ADAMW_KERNELS)}, got {self.kernel!r}",
        )


@dataclass
class TrainConfig:
    """Batching, precision, DeepSpeed, checkpoints and logging (shared by all phases)."""

    micro_batch_size: int = 16
    """Sequences per rank per forward pass."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    global_batch_size: int = 0
    """Sequences per optimizer step over all ranks; 0 = micro_batch_size * grad_accum * world size.
    When set it must equal that product (checked at launch, when the world size is known)."""
    precision: str = "fp32"
    """fp32, bf16 or fp16 (fp16 needs an accelerator that supports it). bf16 is the one to choose on
    GPUs (Ampere or newer); fp32 is the default because it is exact on CPU."""
    tf32: bool = True
    """With precision fp32 on an Ampere or newer GPU: run matmuls and convolutions in TF32 (no effect
    elsewhere)."""
    deepspeed_config: str = "ds_configs/zero1.json"
    """DeepSpeed JSON template; batch sizes and precision are filled in from this config."""
    zero_stage: int | None = None
    """Override the template's ZeRO stage (0-3)."""
    log_every: int = 10
    """Steps between console/TensorBoard logs."""
    eval_every: int = 0
    """Steps between validation-loss evaluations per language (0 = only at the end)."""
    eval_suite_every: int = 0
    """Steps between runs of the full evaluation suite (``evaluate`` section: MLM loss, retrieval,
    classification) on the checkpoint just saved, logged to TensorBoard as ``eval/*`` (0 = off;
    must be a multiple of save_every). Runs on rank 0 while the other ranks wait."""
    eval_batches: int = 4
    """Micro-batches per language for each validation evaluation."""
    save_every: int = 100
    """Steps between checkpoints (a final one is always written)."""
    keep_last: int = 2
    """Newest checkpoints to keep."""
    keep_every: int = 0
    """Also keep every checkpoint whose step is a multiple of this (0 = none)."""
    seed: int = 1234
    """Seed for weights init, dropout and every other RNG."""
    tensorboard: bool = True
    """Write TensorBoard scalars (rank 0)."""
    log_samples: bool = False
    """Log every rank's (sample id, language, chunk) per step to ``<phase>/samples/`` (data audits)."""
    dist_timeout_s: int = 1800
    """Collective timeout; a hung rank fails the job after this many seconds."""
    heartbeat_s: float = 2.0
    """Seconds between writes of a rank's heartbeat file (only when its progress changed)."""
    heartbeat_dir: str = ""
    """Directory of the per-rank heartbeat files read by the stuck-rank report; empty = node-local
    ``$TMPDIR/megameta-heartbeat-<hash of the phase dir>`` (a report then names this node's ranks
    only). Set a shared path to have every rank's report cover every rank (one small write per
    rank every heartbeat_s)."""
    prefetch: int = 2
    """Micro-batches built ahead of the step in a background thread (pinned memory on CUDA);
    0 = build each batch in the step."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """Divergence guard: skip non-finite or spiking steps, roll back after several in a row."""

    def validate(self, path: str) -> None:
        self.guard.validate(f"{path}.guard")
        for name in (
            "micro_batch_size",
            "grad_accum",
            "log_every",
            "save_every",
            "keep_last",
            "eval_batches",
            "dist_timeout_s",
        ):
            value = getattr(self, name)
            check(value >= 1, f"{path}.{name}", f"must be >= 1, got {value}")
        check(self.heartbeat_s > 0, f"{path}.heartbeat_s", f"must be > 0, got {self.heartbeat_s}")
        for name in ("global_batch_size", "eval_every", "keep_every", "eval_suite_every", "prefetch"):
            value = getattr(self, name)
            check(value >= 0, f"{path}.{name}", f"must be >= 0, got {value}")
        check(
            self.precision in PRECISIONS,
            f"{path}.precision",
            f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        check(
            self.zero_stage in (None, 0, 1, 2, 3),
            f"{path}.zero_stage",
            f"must be 0, 1, 2 or 3, got {self.zero_stage}",
        )
        check(
            self.eval_suite_every % self.save_every == 0,
            f"{path}.eval_suite_every",
            f"{self.eval_suite_every} is not a multiple of save_every ({self.save_every})",
        )
        per_rank = self.micro_batch_size * self.grad_accum
        check(
            self.global_batch_size % per_rank == 0,
            f"{path}.global_batch_size",
            f"{self.global_batch_size} is not a multiple of micro_batch_size * grad_accum = {per_rank}",
        )


@dataclass
class LaunchConfig:
    """How ``megameta pipeline`` launches each training phase."""

    launcher: str = "deepspeed"
    """deepspeed, torchrun, mpirun, or none (in this process, one rank)."""
    nproc: int = 2
    """Processes (GPUs, or CPU ranks) per node."""
    omp_threads: int = 1
    """OMP_NUM_THREADS per rank when running on CPU."""

    def validate(self, path: str) -> None:
        check(
            self.launcher in LAUNCHERS,
            f"{path}.launcher",
            f"must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}",
        )
        check(self.nproc >= 1, f"{path}.nproc", f"must be >= 1, got {self.nproc}")
        check(self.omp_threads >= 1, f"{path}.omp_threads", f"must be >= 1, got {self.omp_threads}")
