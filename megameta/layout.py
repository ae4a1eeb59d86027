"""Every path a run writes, named once.

A run dir holds the shared vocabulary and shards, one dir per phase, and the
comparison of the two arms::

    <run_dir>/
        pipeline_config.yaml       the config the pipeline ran with
        tokenizer/                 SentencePiece model + HF tokenizer files
        shards/                    <lang>/<split>.bin/.idx + manifest.json
        logs/                      SLURM job logs
        comparison/                meta vs baseline (comparison.md/.json/.png)
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


@dataclass(frozen=True)
class PhaseLayout:
    """The paths of one phase's dir."""

    dir: Path

    @property
    def checkpoints(self) -> Path:
        return self.dir / CHECKPOINTS

    @property
    def done(self) -> Path:
        return self.dir / DONE

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def ds_config(self) -> Path:
        return self.dir / "ds_config.json"

    @property
    def tokenizer(self) -> Path:
        return self.dir / TOKENIZER

    @property
    def train_log(self) -> Path:
        return self.dir / "train_log.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"

    def sample_log(self, rank: int) -> Path:
        return self.dir / "samples" / f"rank{rank}.jsonl"

    def eval_suite(self, tag: str) -> Path:
        return self.dir / "eval_suite" / tag

    @property
    def hf(self) -> Path:
        return self.dir / "hf"

    @property
    def eval(self) -> Path:
        return self.dir / "eval"

    @property
    def report(self) -> Path:
        return self.eval / "report.json"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run dir (``run_dir`` in the config)."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> RunLayout:
        return cls(Path(run_dir))

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def pipeline_config(self) -> Path:
        return self.root / "pipeline_config.yaml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def comparison(self) -> Path:
        return self.root / "comparison"

    def phase(self, name: str) -> PhaseLayout:
        return PhaseLayout(self.root / name)


def tokenizer_of_checkpoint(ckpt_dir: Path) -> Path:
    """The run's tokenizer as seen from one checkpoint dir (``<phase>/checkpoints/<tag>``)."""
    return ckpt_dir.parent.parent / TOKENIZER
