"""The run config tree: one YAML file mirrors :class:`RunConfig` exactly.

Every CLI verb takes ``--config FILE.yaml`` plus dotted overrides
(``train.micro_batch_size=8 phases[1].alpha=0.5``). Loading is strict: unknown
keys, wrong types and out-of-range values fail with the field's full path.
Each concern's section lives beside the code it configures (``data/config.py``,
``model/config.py``, ``train/config.py``, ``evaluate/config.py``); the phases, the recipe
as data, live here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from megameta.configtools import apply_overrides, check, from_dict, load_yaml, to_dict
from megameta.data.config import CorpusConfig, DataConfig, TokenizerConfig
from megameta.errors import ConfigError
from megameta.evaluate.config import EvalConfig
from megameta.layout import RunLayout
from megameta.model.config import ModelConfig
from megameta.train.config import LaunchConfig, OptimConfig, TrainConfig

__all__ = [
    "CorpusConfig",
    "DataConfig",
    "EvalConfig",
    "InitFrom",
    "LaunchConfig",
    "ModelConfig",
    "OptimConfig",
    "PhaseConfig",
    "ResolvedPhase",
    "RunConfig",
    "TokenizerConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
]


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
        check(
            bool(self.name) and "/" not in self.name,
            f"{path}.name",
            f"must be a non-empty name without '/', got {self.name!r}",
        )
        check(bool(self.langs), f"{path}.langs", "needs at least one language")
        check(self.steps >= 0 and self.tokens >= 0, f"{path}.steps", "steps and tokens must be >= 0")
        check(self.steps > 0 or self.tokens > 0, f"{path}.steps", "set steps or tokens (the phase's budget)")
        for name in ("alpha", "alpha_end"):
            value = getattr(self, name)
            check(value is None or 0 < value <= 1, f"{path}.{name}", f"must be in (0, 1], got {value}")
        check(self.lr is None or self.lr > 0, f"{path}.lr", f"must be > 0, got {self.lr}")
        check(
            self.warmup_steps is None or self.warmup_steps >= 0,
            f"{path}.warmup_steps",
            f"must be >= 0, got {self.warmup_steps}",
        )


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
        check(bool(self.data.sources), "data.sources", "needs at least one language with training files")
        for group in ("phases", "baseline"):
            seen: list[str] = []
            for i, phase in enumerate(getattr(self, group)):
                where = f"{group}[{i}]"
                check(phase.name not in seen, f"{where}.name", f"duplicate phase name {phase.name!r}")
                for lang in phase.langs:
                    check(
                        lang in self.data.sources,
                        f"{where}.langs",
                        f"language {lang!r} has no entry in data.sources ({', '.join(self.data.sources)})",
                    )
                ref = phase.init_from
                if ref and not _looks_like_path(ref):
                    check(
                        ref in seen,
                        f"{where}.init_from",
                        f"{ref!r} is not an earlier phase ({', '.join(seen) or 'none'}) nor a path",
                    )
                if ref and _looks_like_path(ref):
                    check(
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
