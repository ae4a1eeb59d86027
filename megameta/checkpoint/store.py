"""Atomic, verifiable checkpoints around DeepSpeed's own save/load.

Layout of ``<phase>/checkpoints/``::

    step_00000100/            one checkpoint (DeepSpeed's files + ours)
        mp_rank_00_model_states.pt, *optim_states.pt   (DeepSpeed)
        rng_rank<r>.pt         RNG states of rank r
        meta.json              CheckpointMeta: step, tokens, phase, config, sha256 + size of every file
    latest                    name of the newest complete checkpoint, written last
    step_00000100_universal/  a re-sharded copy for a new world size (until the next save)

A checkpoint is first written to ``.staging-<tag>/<tag>`` and renamed into
place only after every rank finished and ``meta.json`` (with checksums) is on
disk (each rank checksums the files it wrote, in threads; rank 0 merges them), so a reader never sees a half-written checkpoint under its final name.
``meta.json`` is the completeness marker: a directory without a valid one is
not a checkpoint. Nothing here imports torch (a login node can find the newest
intact checkpoint in milliseconds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from megameta.checkpoint.meta import META, CheckpointMeta
from megameta.errors import InputError
from megameta.fileio import sha256_file, write_atomic
from megameta.layout import CHECKPOINTS

LATEST = "latest"
TAG_RE = re.compile(r"^step_(\d+)$")


def tag_for(step: int) -> str:
    """The tag (dir name) of the checkpoint at ``step``; tags sort by step."""
    return f"step_{step:08d}"


def step_of(tag: str) -> int:
    """The step a tag names, -1 for a name that is not a tag."""
    m = TAG_RE.match(tag)
    return int(m.group(1)) if m else -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_dir(root: Path, tag: str) -> Path:
    """Where every rank writes checkpoint ``tag`` (DeepSpeed adds ``/<tag>``) before :func:`finalize`."""
    return root / f".staging-{tag}"


#: Threads hashing checkpoint files at once (hashlib releases the GIL on large reads).
HASH_WORKERS = 4
_OWNER_RE = re.compile(r"(?:pp_rank_|rng_rank)(\d+)[_.]")


def owner_rank(name: str, world: int) -> int:
    """The rank that wrote checkpoint file ``name`` (DeepSpeed's ``*pp_rank_<r>_*``, our
    ``rng_rank<r>.pt``); files written once for all ranks (model states, meta) belong to rank 0."""
    m = _OWNER_RE.search(Path(name).name)
    return int(m.group(1)) if m and int(m.group(1)) < world else 0


def staged_files(stage: Path) -> list[str]:
    """Every file under ``stage``, relative and sorted."""
    return sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())


def file_records(stage: Path, names: list[str], workers: int = HASH_WORKERS) -> dict[str, dict]:
    """``{name: {"size", "sha256"}}`` of files ``names`` under ``stage``, hashed by ``workers`` threads."""

    def record(name: str) -> dict:
        path = stage / name
        return {"size": path.stat().st_size, "sha256": sha256_file(path)}

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return dict(zip(names, pool.map(record, names), strict=True))


def finalize(root: Path, tag: str, meta: CheckpointMeta, files: dict[str, dict] | None = None,
             workers: int = HASH_WORKERS) -> Path:  # fmt: skip
    """Rank 0, after every rank wrote its files: checksum, write meta.json, rename, point latest.

    ``files`` are records the writing ranks already computed (:func:`file_records`); a file on disk
    without a record, or whose size changed since, is hashed here. Returns the checkpoint's final
    dir. ``meta.tag`` and ``meta.files`` are filled in here.
    """
    stage = staging_dir(root, tag) / tag
    names = staged_files(stage)
    given = files or {}
    todo = [n for n in names if n not in given or given[n]["size"] != (stage / n).stat().st_size]
    files = {**{n: given[n] for n in names if n not in todo}, **file_records(stage, todo, workers)}
    files = {n: files[n] for n in names}
    write_atomic(stage / META, json.dumps(meta.with_files(tag, files).to_dict(), indent=2))
    final = root / tag
    if final.exists():  # a stale copy of the same step (e.g. re-saved after a crash): replace it
        shutil.rmtree(final)
    os.replace(stage, final)
    shutil.rmtree(staging_dir(root, tag), ignore_errors=True)
    _fsync_dir(root)
    write_atomic(root / LATEST, tag + "\n")
    return final


def check_integrity(ckpt: Path, full: bool = True, workers: int = HASH_WORKERS) -> str | None:
    """None when ``ckpt`` is complete and intact, else the reason it is not.

    Sizes are compared with meta.json first (every file, cheap); ``full`` then also compares sha256
    checksums (reads every byte, ``workers`` files at a time).
    """
    try:
        meta = CheckpointMeta.read(ckpt)
    except InputError as e:
        return str(e)
    for name, info in meta.files.items():
        path = ckpt / name
        if not path.exists():
            return f"{path} missing"
        if path.stat().st_size != info["size"]:
            return f"{path} has {path.stat().st_size} bytes, expected {info['size']} (truncated?)"
    if not full:
        return None
    names = list(meta.files)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = pool.map(lambda name: sha256_file(ckpt / name), names)
        for name, digest in zip(names, digests, strict=True):
            if digest != meta.files[name]["sha256"]:
                return f"{ckpt / name} checksum mismatch (corrupted)"
    return None


def list_tags(root: Path) -> list[str]:
    """Checkpoint tags under ``root``, oldest first (staging and universal dirs excluded)."""
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if p.is_dir() and TAG_RE.match(p.name)), key=step_of)


def newest_intact(root: Path, log: Callable[[str], object] = print, full: bool = True) -> str | None:
    """The newest intact checkpoint tag (``latest`` first), falling back to older ones with a message."""
    tags = list_tags(root)
    latest_file = root / LATEST
    if latest_file.exists():
        named = latest_file.read_text().strip()
        if named in tags:  # prefer what latest names, then anything older
            tags = [t for t in tags if step_of(t) <= step_of(named)]
    for tag in reversed(tags):
        reason = check_integrity(root / tag, full=full)
        if reason is None:
            return tag
        log(f"[checkpoint] skipping {tag}: {reason}; falling back to the previous checkpoint")
    return None


def checkpoints_dir(path: Path) -> Path:
    """The checkpoints dir of a phase dir; any other path is taken as a checkpoints dir itself."""
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def is_checkpoint(path: Path) -> bool:
    """``path`` is one checkpoint (it has a meta.json), intact or not."""
    return (path / META).exists()


def resolve(
    path: str | Path, tag: str | None = None, full: bool = True, log: Callable[[str], object] = print
) -> Path:
    """One intact checkpoint dir from a phase dir, a checkpoints dir or a checkpoint dir. Raises InputError.

    Without ``tag``, a phase or checkpoints dir gives its newest intact checkpoint (fallbacks are
    reported through ``log``). ``full=False`` checks file sizes only, not checksums.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint path not found: {path}")
    if tag is None and is_checkpoint(path):
        return _intact(path, full)
    root = checkpoints_dir(path)
    if tag is not None:
        if not (root / tag).is_dir():
            raise InputError(
                f"checkpoint tag {tag} not found in {root} (have: {', '.join(list_tags(root)) or 'none'})"
            )
        return _intact(root / tag, full)
    found = newest_intact(root, log=log, full=full)
    if found is None:
        raise InputError(f"no complete checkpoint in {root}")
    return root / found


def _intact(ckpt: Path, full: bool) -> Path:
    reason = check_integrity(ckpt, full=full)
    if reason:
        raise InputError(f"checkpoint {ckpt} is not usable: {reason}")
    return ckpt


def prune(root: Path, keep_last: int, keep_every: int) -> list[str]:
    """Delete old checkpoints, keeping the newest ``keep_last`` and every ``keep_every``-th step.

    Returns the tags removed. Universal copies older than the newest checkpoint go too.
    """
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
