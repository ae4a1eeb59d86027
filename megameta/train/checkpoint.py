"""Atomic, verifiable checkpoints around DeepSpeed's own save/load.

Layout of ``<phase>/checkpoints/``::

    step_00000100/            one checkpoint (DeepSpeed's files + ours)
        mp_rank_00_model_states.pt, *optim_states.pt   (DeepSpeed)
        rng_rank<r>.pt         RNG states of rank r
        meta.json              step, tokens, phase, config, sha256 + size of every file
    latest                    name of the newest complete checkpoint, written last

A checkpoint is first written to ``.staging-<tag>/<tag>`` and renamed into
place only after every rank finished and ``meta.json`` (with checksums) is on
disk, so a reader never sees a half-written checkpoint under its final name.
``meta.json`` is the completeness marker: a directory without a valid one is
not a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from megameta.errors import InputError
from megameta.fileio import sha256_file, write_atomic

LATEST = "latest"
META = "meta.json"
TAG_RE = re.compile(r"^step_(\d+)$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(tag: str) -> int:
    m = TAG_RE.match(tag)
    return int(m.group(1)) if m else -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def staging_dir(root: Path, tag: str) -> Path:
    return root / f".staging-{tag}"


def finalize(root: Path, tag: str, meta: dict) -> Path:
    """Rank 0, after every rank wrote its files: checksum, write meta.json, rename, point latest."""
    stage = staging_dir(root, tag) / tag
    files = {}
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        files[str(path.relative_to(stage))] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    write_atomic(stage / META, json.dumps({**meta, "tag": tag, "files": files}, indent=2))
    final = root / tag
    if final.exists():  # a stale copy of the same step (e.g. re-saved after a crash): replace it
        shutil.rmtree(final)
    os.replace(stage, final)
    shutil.rmtree(staging_dir(root, tag), ignore_errors=True)
    _fsync_dir(root)
    write_atomic(root / LATEST, tag + "\n")
    return final


def validate(ckpt: Path, full: bool = True) -> str | None:
    """None when ``ckpt`` is complete and intact, else the reason it is not."""
    meta_path = ckpt / META
    if not meta_path.exists():
        return f"{meta_path} missing (incomplete checkpoint)"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{meta_path} is corrupt"
    for name, info in meta.get("files", {}).items():
        path = ckpt / name
        if not path.exists():
            return f"{path} missing"
        if path.stat().st_size != info["size"]:
            return f"{path} has {path.stat().st_size} bytes, expected {info['size']} (truncated?)"
        if full and sha256_file(path) != info["sha256"]:
            return f"{path} checksum mismatch (corrupted)"
    return None


def read_meta(ckpt: Path) -> dict:
    return json.loads((ckpt / META).read_text())


def list_tags(root: Path) -> list[str]:
    """Checkpoint tags under ``root``, oldest first (staging dirs excluded)."""
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if p.is_dir() and TAG_RE.match(p.name)), key=step_of)


def find_valid(root: Path, log=print, full: bool = True) -> str | None:
    """The newest intact checkpoint tag (``latest`` first), falling back to older ones with a message."""
    tags = list_tags(root)
    latest_file = root / LATEST
    if latest_file.exists():
        named = latest_file.read_text().strip()
        if named in tags:  # prefer what latest names, then anything older
            tags = [t for t in tags if step_of(t) <= step_of(named)]
    for tag in reversed(tags):
        reason = validate(root / tag, full=full)
        if reason is None:
            return tag
        log(f"[checkpoint] skipping {tag}: {reason}; falling back to the previous checkpoint")
    return None


def resolve(path: str | Path, tag: str | None = None) -> Path:
    """A checkpoint dir from a phase dir, a checkpoints dir or a checkpoint dir. Raises InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint path not found: {path}")
    if (path / META).exists() and tag is None:
        reason = validate(path)
        if reason:
            raise InputError(f"checkpoint {path} is not usable: {reason}")
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if tag is not None:
        if not (root / tag).is_dir():
            raise InputError(
                f"checkpoint tag {tag} not found in {root} (have: {', '.join(list_tags(root)) or 'none'})"
            )
        reason = validate(root / tag)
        if reason:
            raise InputError(f"checkpoint {root / tag} is not usable: {reason}")
        return root / tag
    found = find_valid(root)
    if found is None:
        raise InputError(f"no complete checkpoint in {root}")
    return root / found


def prune(root: Path, keep_last: int, keep_every: int) -> list[str]:
    """Delete old checkpoints, keeping the newest ``keep_last`` and every ``keep_every``-th step."""
    tags = list_tags(root)
    keep = set(tags[-keep_last:])
    if keep_every:
        keep |= {t for t in tags if step_of(t) % keep_every == 0}
    removed = [t for t in tags if t not in keep]
    for tag in removed:
        shutil.rmtree(root / tag, ignore_errors=True)
    # Universal (re-sharded) copies are only needed until the resumed run has saved again.
    newest = step_of(tags[-1]) if tags else -1
    for path in root.glob("step_*_universal"):
        if step_of(path.name.removesuffix("_universal")) < newest:
            shutil.rmtree(path, ignore_errors=True)
    (root / "latest_universal").unlink(missing_ok=True)
    return removed
