"""``meta.json``: what a checkpoint is, written by :func:`finalize` and read back by :meth:`CheckpointMeta.read`.

One typed record instead of hand-built dicts: the trainer, ``convert --from-hf`` and the
benchmark build a :class:`CheckpointMeta`; ``finalize`` adds ``tag`` and ``files`` (size and
sha256 of every file) and writes it; everything that reads a checkpoint goes through ``read``.
Fields added over time have defaults, so a meta.json written before they existed still reads;
an unknown key or a wrong type is an :class:`InputError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megameta.configtools import from_dict, to_dict
from megameta.errors import ConfigError, InputError

META = "meta.json"


@dataclass
class CheckpointMeta:
    """The contents of one checkpoint's ``meta.json``."""

    step: int
    """Optimizer steps taken when the checkpoint was written."""
    samples_seen: int
    """Global sample index: the data stream resumes here (any world size)."""
    tokens_seen: int
    """Training tokens consumed so far (``samples_seen * max_seq_len``)."""
    phase: str
    """Name of the phase that wrote it (``from_hf`` for an imported Hugging Face model)."""
    world_size: int
    """Ranks that wrote it: ZeRO partitions are laid out for this many ranks."""
    model: dict[str, Any]
    """The resolved ``ModelConfig``, dumped (``megameta.config.dump_config``)."""
    zero_stage: int
    """DeepSpeed ZeRO stage of the files (0-3): decides how the weights are read back."""
    precision: str
    """Training precision (fp32, bf16, fp16); the weights are read from the fp32 master copy."""
    langs: list[str] = field(default_factory=list)
    """The phase's languages, in sampler order (empty for imported weights)."""
    lang_samples: list[int] = field(default_factory=list)
    """Samples drawn per language (same order as ``langs``)."""
    lang_tokens: list[int] = field(default_factory=list)
    """Tokens drawn per language (same order as ``langs``)."""
    config: dict[str, Any] | None = None
    """The whole ``RunConfig``, dumped; None when the checkpoint was not written by a run."""
    tokenizer: str = "../../tokenizer"
    """The run's tokenizer dir, relative to the checkpoint dir."""
    data_stream: dict[str, Any] | None = None
    """Fingerprint of the sample stream (seed, alpha, sequence length, vocabulary): resuming
    refuses a mismatch. None in checkpoints written before it was recorded."""
    source_hf_dir: str | None = None
    """The Hugging Face dir ``convert --from-hf`` imported, else None."""
    skipped_steps: int = 0
    """Optimizer steps the divergence guard skipped so far (optimizer state untouched)."""
    rollbacks: int = 0
    """Times the divergence guard rolled the run back to an earlier checkpoint."""
    skipped_samples: list[list[int]] = field(default_factory=list)
    """``[start, end)`` global sample ranges the data stream jumped over after each rollback."""
    tag: str = ""
    """The checkpoint's tag (``step_XXXXXXXX``); set by :func:`finalize`."""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Relative path -> ``{"size": bytes, "sha256": hex}`` of every file; set by :func:`finalize`."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, keys in field order."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str | Path = META) -> CheckpointMeta:
        """Strict load; errors (:class:`InputError`) start with ``where`` and name the key."""
        try:
            return from_dict(cls, data, "")
        except ConfigError as e:
            raise InputError(f"{where}: {e}") from None

    @classmethod
    def read(cls, ckpt_dir: str | Path) -> CheckpointMeta:
        """The meta of checkpoint dir ``ckpt_dir``; InputError when missing, corrupt or of unknown shape."""
        path = Path(ckpt_dir) / META
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path} missing (incomplete checkpoint)") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path} is corrupt ({type(e).__name__})") from None
        return cls.from_dict(data, path)

    def with_files(self, tag: str, files: dict[str, dict[str, Any]]) -> CheckpointMeta:
        return dataclasses.replace(self, tag=tag, files=files)
