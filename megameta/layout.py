"""Every path a run writes, named once.

A run dir holds the shared vocabulary and shards, one dir per phase, and the
comparison of the two arms::

    <run_dir>/
        pipeline_config.yaml       the config the pipeline ran with
        tokenizer/                 SentencePiece model + HF tokenizer files
        shards/                    <lang>/<split>.bin/.idx + manifest.json
        logs/                      SLURM job logs
        comparison/                meta vs baseline (comparison.md/.json/.png), paired by seed
        seeds/seed<k>/             seed k >= 1 of `pipeline --seeds N`: a run dir of its own
                                   (phases, pipeline_config.yaml) whose tokenizer/ and shards/
                                   link to the ones above; seed 0 is this run dir itself
        <phase>/
            config.yaml, ds_config.json, tokenizer/
            checkpoints/step_XXXXXXXX/, checkpoints/latest
            DONE.json              the phase finished (its tag, tokens, valid loss, hand-off digest)
            train_log.jsonl        one row per log window
            tensorboard/
            samples/rank<r>.jsonl  sample audit log (train.log_samples)
            eval_suite/<tag>/      evaluation during training
            hf/                    the converted Hugging Face model dir
            eval/                  report.json, report.md, plots

Liveness heartbeats are not in the run dir: they live node-locally (``train.heartbeat_dir``,
:func:`megameta.train.watchdog.heartbeat_dir`), off the shared filesystem.

Nothing here touches the disk or imports torch: a SLURM login node can ask for a
path in milliseconds (``tools/slurm_env.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DONE = "DONE.json"
CHECKPOINTS = "checkpoints"
TOKENIZER = "tokenizer"


def _path(*parts: str) -> property:
    """A read-only attribute: ``parts`` joined under the layout's root."""
    return property(lambda self: self.root.joinpath(*parts))


@dataclass(frozen=True)
class PhaseLayout:
    """The paths of one phase's dir (``<run_dir>/<phase>``)."""

    root: Path

    checkpoints = _path(CHECKPOINTS)
    done = _path(DONE)
    config = _path("config.yaml")
    ds_config = _path("ds_config.json")
    tokenizer = _path(TOKENIZER)
    train_log = _path("train_log.jsonl")
    tensorboard = _path("tensorboard")
    hf = _path("hf")
    eval = _path("eval")
    report = _path("eval", "report.json")

    @property
    def dir(self) -> Path:
        return self.root

    def sample_log(self, rank: int) -> Path:
        return self.root / "samples" / f"rank{rank}.jsonl"

    def eval_suite(self, tag: str) -> Path:
        return self.root / "eval_suite" / tag


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run dir (``run_dir`` in the config)."""

    root: Path

    tokenizer = _path(TOKENIZER)
    shards = _path("shards")
    pipeline_config = _path("pipeline_config.yaml")
    logs = _path("logs")
    comparison = _path("comparison")

    @classmethod
    def of(cls, run_dir: str | Path) -> RunLayout:
        return cls(Path(run_dir))

    def phase(self, name: str) -> PhaseLayout:
        return PhaseLayout(self.root / name)

    def seed(self, k: int) -> RunLayout:
        """The run dir of an experiment's seed ``k`` (seed 0 is this run dir)."""
        return self if k == 0 else RunLayout(self.root / "seeds" / f"seed{k}")


def tokenizer_of_checkpoint(ckpt_dir: Path) -> Path:
    """The run's tokenizer as seen from one checkpoint dir (``<phase>/checkpoints/<tag>``)."""
    return ckpt_dir.parent.parent / TOKENIZER
