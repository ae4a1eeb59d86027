"""Weights only, from wherever they are: the phase hand-off (``init_from``) and ``--from-hf`` round trips."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from megameta.checkpoint.store import resolve
from megameta.checkpoint.zero_reader import consolidated_state_dict
from megameta.model.hf_adapter import add_tied, canonical_state, is_hf_dir, read_hf_state


def load_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """fp32 state dict (tied aliases included) and the dir it came from, for an HF model dir, a phase
    dir, a checkpoints dir, a checkpoint dir or a ``--from-hf`` output dir. InputError when unusable."""
    source = Path(source)
    if is_hf_dir(source):
        state = {k: v.float() for k, v in canonical_state(read_hf_state(source), source).items()}
        return add_tied(state), source
    where = resolve(source)
    return consolidated_state_dict(where), where


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names and fp32 values (tied duplicates counted once): equal digests, equal weights."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if k != "lm_head.decoder.weight"):
        h.update(name.encode())
        h.update(state[name].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
