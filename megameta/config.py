"""The run config tree: one YAML file mirrors :class:`RunConfig` exactly.

Every CLI verb takes ``--config FILE.yaml`` plus dotted overrides
(``train.micro_batch_size=8 phases[1].alpha=0.5``). Loading is strict: unknown
keys, wrong types and out-of-range values fail with the field's full path.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from megameta.configtools import apply_overrides, from_dict, load_yaml, to_dict
from megameta.errors import ConfigError
from megameta.evaluate.config import EvalConfig
from megameta.launch import LAUNCHERS as LAUNCHER_REGISTRY
from megameta.layout import RunLayout
from megameta.model.config import ModelConfig
from megameta.train.schedule import SCHEDULES as SCHEDULE_REGISTRY

# The choices come from the registries that act on them, so a new entry there is valid here too.
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = tuple(SCHEDULE_REGISTRY)
LAUNCHERS = tuple(LAUNCHER_REGISTRY)


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {msg}")


@dataclass
class CorpusConfig:
    """Where raw text lives."""

    dir: str = "cache/demo_corpus"
    """Root of the raw corpus; relative source paths in ``data`` resolve against it."""
    demo: bool = True
    """Build the embedded demo corpus into ``dir`` when it is missing (``fetch-demo-corpus``)."""


@dataclass
class TokenizerConfig:
    """The shared SentencePiece vocabulary, trained on all languages of ``data.sources``."""

    vocab_size: int = 8000
    """SentencePiece pieces; the HF tokenizer adds 4 (``<s> <pad> </s> <unk>`` offset + ``<mask>``)."""
    model_type: str = "unigram"
    """SentencePiece algorithm: unigram (as XLM-R) or bpe."""
    alpha: float = 0.3
    """Language smoothing for the training sentences: language l is sampled with p_l^alpha."""
    max_sentences: int = 200_000
    """Sentences sampled (over all languages) to train the vocabulary."""
    character_coverage: float = 0.9995
    """Fraction of characters covered by the vocabulary (rare characters fall back to ``<unk>``)."""
    seed: int = 0
    """Seed of the sentence sample."""

    def validate(self, path: str) -> None:
        _check(self.vocab_size >= 100, f"{path}.vocab_size", f"must be >= 100, got {self.vocab_size}")
        _check(
            self.model_type in ("unigram", "bpe"),
            f"{path}.model_type",
            f"must be unigram or bpe, got {self.model_type!r}",
        )
        _check(0 < self.alpha <= 1, f"{path}.alpha", f"must be in (0, 1], got {self.alpha}")
        _check(self.max_sentences > 0, f"{path}.max_sentences", f"must be > 0, got {self.max_sentences}")
        _check(
            0 < self.character_coverage <= 1,
            f"{path}.character_coverage",
            f"must be in (0, 1], got {self.character_coverage}",
        )


@dataclass
class DataConfig:
    """Raw text -> shards (preprocess) and shards -> MLM batches (train)."""

    sources: dict[str, list[str]] = field(default_factory=dict)
    """Training text per language: ``lang -> [files]`` (.txt one document per line, .jsonl, .parquet)."""
    valid_sources: dict[str, list[str]] = field(default_factory=dict)
    """Validation text per language (same formats); never sampled for training."""
    text_field: str = "text"
    """Field holding the document text in .jsonl / .parquet files."""
    workers: int = 2
    """Parallel tokenizer processes for ``preprocess``."""
    max_seq_len: int = 128
    """Tokens per packed training sequence, ``<s>`` and ``</s>`` included."""
    alpha: float = 0.3
    """Language sampling exponent: q_l = p_l^alpha / sum_k p_k^alpha (XLM-R 0.3, XLM 0.5, mBERT 0.7)."""
    mask_prob: float = 0.15
    """Fraction of non-special tokens selected for MLM (then 80% <mask>, 10% random, 10% unchanged)."""
    whole_word_mask: bool = False
    """Mask whole SentencePiece words (pieces starting with the word marker) instead of single pieces."""
    seed: int = 1234
    """Seed of the sample order and the masking; the stream is a pure function of (seed, sample index)."""

    def validate(self, path: str) -> None:
        _check(self.workers >= 1, f"{path}.workers", f"must be >= 1, got {self.workers}")
        _check(self.max_seq_len >= 8, f"{path}.max_seq_len", f"must be >= 8, got {self.max_seq_len}")
        _check(0 < self.alpha <= 1, f"{path}.alpha", f"must be in (0, 1], got {self.alpha}")
        _check(0 < self.mask_prob < 1, f"{path}.mask_prob", f"must be in (0, 1), got {self.mask_prob}")
        for lang, files in {**self.sources, **self.valid_sources}.items():
            _check(bool(files), f"{path}.sources.{lang}", "needs at least one file")


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

    def validate(self, path: str) -> None:
        _check(self.lr > 0, f"{path}.lr", f"must be > 0, got {self.lr}")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"{path}.betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        _check(self.eps > 0, f"{path}.eps", f"must be > 0, got {self.eps}")
        _check(self.weight_decay >= 0, f"{path}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.grad_clip >= 0, f"{path}.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _check(self.warmup_steps >= 0, f"{path}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(
            self.schedule in SCHEDULES,
            f"{path}.schedule",
            f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        _check(
            0 <= self.min_lr_ratio <= 1, f"{path}.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}"
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

    def validate(self, path: str) -> None:
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
            _check(value >= 1, f"{path}.{name}", f"must be >= 1, got {value}")
        _check(self.heartbeat_s > 0, f"{path}.heartbeat_s", f"must be > 0, got {self.heartbeat_s}")
        for name in ("global_batch_size", "eval_every", "keep_every", "eval_suite_every", "prefetch"):
            value = getattr(self, name)
            _check(value >= 0, f"{path}.{name}", f"must be >= 0, got {value}")
        _check(
            self.precision in PRECISIONS,
            f"{path}.precision",
            f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        _check(
            self.zero_stage in (None, 0, 1, 2, 3),
            f"{path}.zero_stage",
            f"must be 0, 1, 2 or 3, got {self.zero_stage}",
        )
        _check(
            self.eval_suite_every % self.save_every == 0,
            f"{path}.eval_suite_every",
            f"{self.eval_suite_every} is not a multiple of save_every ({self.save_every})",
        )
        per_rank = self.micro_batch_size * self.grad_accum
        _check(
            self.global_batch_size % per_rank == 0,
            f"{path}.global_batch_size",
            f"{self.global_batch_size} is not a multiple of micro_batch_size * grad_accum = {per_rank}",
        )


@dataclass
class PhaseConfig:
    """One training phase: its data mixture, budget and initialization ("phases are data")."""

    name: str = ""
    """Phase name; its outputs go to ``<run_dir>/<name>/``."""
    langs: list[str] = field(default_factory=list)
    """Languages sampled in this phase (keys of ``data.sources``)."""
    steps: int = 0
    """Optimizer steps; 0 = derive from ``tokens``."""
    tokens: int = 0
    """Token budget (sequences * max_seq_len); used when ``steps`` is 0."""
    alpha: float | None = None
    """Language sampling exponent for this phase (default ``data.alpha``)."""
    alpha_end: float | None = None
    """If set, alpha anneals linearly from ``alpha`` to this value over the phase."""
    lr: float | None = None
    """Peak learning rate for this phase (default ``optim.lr``)."""
    warmup_steps: int | None = None
    """Warm-up steps for this phase (default ``optim.warmup_steps``)."""
    init_from: str | None = None
    """Start from the final weights of an earlier phase (its name) or of a checkpoint / HF model dir
    (a path); optimizer and schedule start fresh. None = random init."""

    def validate(self, path: str) -> None:
        _check(
            bool(self.name) and "/" not in self.name,
            f"{path}.name",
            f"must be a non-empty name without '/', got {self.name!r}",
        )
        _check(bool(self.langs), f"{path}.langs", "needs at least one language")
        _check(self.steps >= 0 and self.tokens >= 0, f"{path}.steps", "steps and tokens must be >= 0")
        _check(self.steps > 0 or self.tokens > 0, f"{path}.steps", "set steps or tokens (the phase's budget)")
        for name in ("alpha", "alpha_end"):
            value = getattr(self, name)
            _check(value is None or 0 < value <= 1, f"{path}.{name}", f"must be in (0, 1], got {value}")
        _check(self.lr is None or self.lr > 0, f"{path}.lr", f"must be > 0, got {self.lr}")
        _check(
            self.warmup_steps is None or self.warmup_steps >= 0,
            f"{path}.warmup_steps",
            f"must be >= 0, got {self.warmup_steps}",
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
        _check(
            self.launcher in LAUNCHERS,
            f"{path}.launcher",
            f"must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}",
        )
        _check(self.nproc >= 1, f"{path}.nproc", f"must be >= 1, got {self.nproc}")
        _check(self.omp_threads >= 1, f"{path}.omp_threads", f"must be >= 1, got {self.omp_threads}")


@dataclass
class RunConfig:
    """A whole run: corpus, vocabulary, shards, model, phases, evaluation."""

    run_dir: str = "runs/demo"
    """All outputs: tokenizer, shards, one dir per phase, converted models, reports."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    phases: list[PhaseConfig] = field(default_factory=list)
    """The recipe, in order (meta-pretraining: English phase, then multilingual phase)."""
    baseline: list[PhaseConfig] = field(default_factory=list)
    """The control run for ``pipeline --with-baseline`` (single multilingual phase, same budget)."""
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def validate(self, path: str) -> None:
        _check(bool(self.data.sources), "data.sources", "needs at least one language with training files")
        for group in ("phases", "baseline"):
            seen: list[str] = []
            for i, phase in enumerate(getattr(self, group)):
                where = f"{group}[{i}]"
                _check(phase.name not in seen, f"{where}.name", f"duplicate phase name {phase.name!r}")
                for lang in phase.langs:
                    _check(
                        lang in self.data.sources,
                        f"{where}.langs",
                        f"language {lang!r} has no entry in data.sources ({', '.join(self.data.sources)})",
                    )
                ref = phase.init_from
                if ref and not _looks_like_path(ref):
                    _check(
                        ref in seen,
                        f"{where}.init_from",
                        f"{ref!r} is not an earlier phase ({', '.join(seen) or 'none'}) nor a path",
                    )
                if ref and _looks_like_path(ref):
                    _check(
                        Path(os.path.expanduser(ref)).exists(),
                        f"{where}.init_from",
                        f"path {ref} does not exist",
                    )
                seen.append(phase.name)

    def resolve_phase(self, name: str) -> ResolvedPhase:
        """Phase ``name`` with every per-phase default filled in from ``data`` and ``optim``, once."""
        phase = self.phase(name)
        init = None
        if phase.init_from:
            # One rule, checked at load by validate(): a path-like reference is a path, anything else
            # names an earlier phase of the same recipe.
            if _looks_like_path(phase.init_from):
                init = InitFrom(Path(os.path.expanduser(phase.init_from)), None)
            else:
                init = InitFrom(self.phase_dir(phase.init_from), phase.init_from)
        return ResolvedPhase(
            name=phase.name,
            langs=list(phase.langs),
            steps=phase.steps,
            tokens=phase.tokens,
            alpha=phase.alpha if phase.alpha is not None else self.data.alpha,
            alpha_end=phase.alpha_end,
            lr=phase.lr if phase.lr is not None else self.optim.lr,
            warmup_steps=phase.warmup_steps if phase.warmup_steps is not None else self.optim.warmup_steps,
            init_from=init,
            seq_len=self.data.max_seq_len,
        )

    # ---- derived paths: megameta.layout names them all ----
    @property
    def layout(self) -> RunLayout:
        return RunLayout.of(self.run_dir)

    @property
    def tokenizer_dir(self) -> Path:
        return self.layout.tokenizer

    @property
    def shard_dir(self) -> Path:
        return self.layout.shards

    def phase_dir(self, name: str) -> Path:
        return self.layout.phase(name).dir

    def hf_dir(self, name: str) -> Path:
        return self.layout.phase(name).hf

    def source_path(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.corpus.dir) / p

    def phase_path(self, name: str) -> str:
        """The dotted config path of phase ``name`` (``phases[1]``, ``baseline[0]``), for messages."""
        for group in ("phases", "baseline"):
            for i, phase in enumerate(getattr(self, group)):
                if phase.name == name:
                    return f"{group}[{i}]"
        return self.phase(name).name  # raises ConfigError naming the phases

    def phase(self, name: str) -> PhaseConfig:
        for phase in self.phases + self.baseline:
            if phase.name == name:
                return phase
        names = ", ".join(p.name for p in self.phases + self.baseline) or "none"
        raise ConfigError(f"phase {name!r} is not in the config (phases: {names})")


@dataclass(frozen=True)
class InitFrom:
    """Where a phase's initial weights come from: an earlier phase's dir (``phase`` set) or a path."""

    path: Path
    """A phase dir, a checkpoint (dir) or a Hugging Face model dir."""
    phase: str | None
    """The earlier phase's name, when the reference named one."""


@dataclass(frozen=True)
class ResolvedPhase:
    """A phase with its defaults resolved (``RunConfig.resolve_phase``): what the trainer runs."""

    name: str
    langs: list[str]
    steps: int
    tokens: int
    alpha: float
    alpha_end: float | None
    lr: float
    warmup_steps: int
    init_from: InitFrom | None
    seq_len: int

    def total_steps(self, global_batch: int) -> int:
        """Optimizer steps of the phase: ``steps``, else the token budget in whole steps."""
        if self.steps:
            return self.steps
        return max(1, math.ceil(self.tokens / (global_batch * self.seq_len)))


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith(".") or ref.startswith("~")


def load_config(path: str | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config, apply dotted overrides, validate. Raises ConfigError."""
    raw = load_yaml(path) if path else {}
    apply_overrides(raw, list(overrides or []))
    return from_dict(RunConfig, raw, "")


def dump_config(cfg: RunConfig) -> dict:
    """The config as the plain dict a YAML file would hold (used in checkpoints and reports)."""
    return to_dict(cfg)
