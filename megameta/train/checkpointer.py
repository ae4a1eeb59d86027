"""Save, resume and re-shard one phase's checkpoints, and mark the phase done.

The files and their guarantees (staging, checksums, ``latest`` written last, fallback to the
previous checkpoint) belong to :mod:`megameta.checkpoint`; this module is the training side:
which checkpoint to resume from, whether it fits this run (ZeRO stage, world size, data stream),
and a save that every rank agrees succeeded before ``latest`` moves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from megameta import checkpoint as ckpt
from megameta.checkpoint import CheckpointMeta
from megameta.config import InitFrom
from megameta.errors import InputError, MegaMetaError
from megameta.fileio import write_atomic
from megameta.layout import PhaseLayout
from megameta.train.reshard import replay_cpu_adam_steps, zero3_group_pairing


def check_data_stream(saved: dict | None, current: dict, where: Path) -> None:
    """Refuse to resume on another sample stream: ``saved`` and ``current`` map config fields to values.

    Checkpoints written before fingerprints existed (``saved`` None) are accepted as they are.
    """
    if saved is None:
        return
    for field, value in current.items():
        if field in saved and saved[field] != value:
            raise InputError(
                f"{field}: {where} was trained with {saved[field]!r}, this run has {value!r}; resuming would "
                f"continue on a different sample stream (restore the value, or start a new phase with init_from)"
            )


class Checkpointer:
    """One phase's checkpoints, seen from a training rank. Collective: every rank calls every method."""

    def __init__(self, layout: PhaseLayout, rank: int, world: int, log: Callable[[str], None]):
        self.layout, self.root = layout, layout.checkpoints
        self.rank, self.world, self.is_main = rank, world, rank == 0
        self.log = log
        self.resume_tag: str | None = None
        self.load_tag: str | None = None
        # Each rank checksums the files it wrote; off (rank 0 hashes everything, one file at a time,
        # while the others wait: the behaviour before) only for bench/checkpoint_stall.py's baseline.
        self.rank_checksums, self.hash_workers = True, ckpt.HASH_WORKERS

    # ---------------------------------------------------------------- resume
    def find(self, ds_config: dict, data_stream: dict) -> CheckpointMeta | None:
        """Pick the checkpoint to resume from, before the engine exists (a world-size change edits
        ``ds_config``); returns its meta, or None for a fresh start."""
        tag = ckpt.newest_intact(self.root, log=self.log) if self.is_main and self.root.is_dir() else None
        box = [tag]
        dist.broadcast_object_list(box, src=0)  # one rank checksums; all agree on the tag
        self.resume_tag = self.load_tag = box[0]
        if self.resume_tag is None:
            return None
        where = self.root / self.resume_tag
        meta = CheckpointMeta.read(where)
        check_data_stream(meta.data_stream, data_stream, where)
        saved_stage, stage = meta.zero_stage, ds_config["zero_optimization"].get("stage", 0)
        if saved_stage != stage:
            raise InputError(
                f"{where} was saved with ZeRO-{saved_stage} but this run uses ZeRO-{stage}; "
                f"resume with the same stage, or start a new phase from its weights (init_from)"
            )
        if meta.world_size != self.world and stage > 0:
            # ZeRO partitions the optimizer state by rank: re-shard through DeepSpeed's universal
            # checkpoint (see megameta.train.reshard for ZeRO-3's fix). ZeRO-0 keeps it whole.
            self.load_tag = self._universal(self.resume_tag)
            ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
        return meta

    def _universal(self, tag: str) -> str:
        out = self.root / f"{tag}_universal"
        if self.is_main and not out.exists():
            tmp = self.root / f".{tag}_universal.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.log(f"[train] world size changed: converting {tag} to a universal checkpoint")
            cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                   str(self.root / tag), "--output_folder", str(tmp), "--num_extract_workers", "1",
                   "--num_merge_workers", "1"]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:  # a runtime failure of DeepSpeed's tool, not bad input
                raise MegaMetaError(
                    f"cannot re-shard {self.root / tag} for {self.world} ranks: "
                    f"{proc.stderr.strip().splitlines()[-1:]}"
                )
            for name in os.listdir(self.root / tag):
                if name.startswith("rng_rank") or name == ckpt.META:
                    shutil.copy(self.root / tag / name, tmp / name)
            os.replace(tmp, out)
        dist.barrier()
        return out.name

    def load(self, engine) -> tuple[dict, bool] | None:
        """Load the checkpoint chosen by :meth:`find` into ``engine``; returns our client state and
        whether this rank's RNG state was restored (only on the same world size)."""
        if self.load_tag is None:
            return None
        with zero3_group_pairing(engine):
            _, client = engine.load_checkpoint(str(self.root), tag=self.load_tag, load_module_strict=True)
        if client is None:
            raise InputError(f"{self.root / self.load_tag}: DeepSpeed could not load this checkpoint")
        replay_cpu_adam_steps(engine)
        state = client["megameta"]
        rng_file = self.root / self.load_tag / f"rng_rank{self.rank}.pt"
        restored = state["world_size"] == self.world and rng_file.exists()
        if restored:
            ckpt.set_rng_state(torch.load(rng_file, weights_only=False))
        return state, restored

    def rollback(self, engine, before_step: int) -> tuple[dict, bool, str]:
        """Load the newest intact checkpoint written before ``before_step`` into the live ``engine``
        (the divergence guard's rollback): our client state, whether RNG was restored, and its tag."""
        tags = ckpt.list_tags(self.root) if self.is_main else []
        good = [
            t for t in tags if ckpt.step_of(t) < before_step and ckpt.check_integrity(self.root / t) is None
        ]
        box = [good[-1] if good else None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is None:
            raise MegaMetaError(
                f"training diverged from step {before_step} and {self.root} holds no intact checkpoint "
                f"before it to roll back to (lower train.save_every, or raise train.guard.max_bad_steps)"
            )
        if CheckpointMeta.read(self.root / box[0]).world_size != self.world:
            # Only the first checkpoint after a world-size change is in another layout; rolling back past
            # the resume point would need the re-sharding of `find` on a live engine.
            raise MegaMetaError(
                f"training diverged from step {before_step}; the checkpoint before it, {self.root / box[0]}, "
                f"was written on another world size: resume the run from it (requeue) instead"
            )
        self.load_tag = box[0]
        state, restored = self.load(engine)
        return state, restored, box[0]

    # ---------------------------------------------------------------- save
    def exists(self, step: int) -> bool:
        """Whether the checkpoint of ``step`` is on disk (rank 0's view, shared)."""
        box = [(self.root / ckpt.tag_for(step)).exists() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def save(
        self, engine, step: int, state: dict, meta: CheckpointMeta, keep_last: int, keep_every: int, fault
    ) -> str:
        """Write checkpoint ``step_<step>`` atomically and return its tag; on failure the previous
        checkpoints stay as they were and MegaMetaError names the one ``latest`` still points at."""
        tag = ckpt.tag_for(step)
        staging = ckpt.staging_dir(self.root, tag)
        error = None
        if self.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            # Check space first: DeepSpeed's save has internal barriers, so a rank failing mid-write
            # would leave the others waiting until the collective timeout.
            need, free = self._checkpoint_bytes(engine), shutil.disk_usage(self.root).free
            if free < need:
                error = f"not enough space: about {need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free"
        error = self._agree(error)
        if error is None:
            error = self._write(engine, staging, tag, state, step, fault)
        error = self._agree(error)
        records = None
        if error is None and self.rank_checksums:
            error, records = self._checksums(staging / tag)
        if error is None and self.is_main:
            try:
                ckpt.finalize(self.root, tag, meta, records, self.hash_workers)
                ckpt.prune(self.root, keep_last, keep_every)
            except OSError as e:
                error = f"rank 0: {e}"
        error = self._agree(error)
        if error is not None:
            if self.is_main:
                shutil.rmtree(staging, ignore_errors=True)
            latest = self.root / ckpt.LATEST
            named = latest.read_text().strip() if latest.exists() else "none"
            raise MegaMetaError(
                f"saving checkpoint {self.root / tag} failed ({error}); latest valid checkpoint is still {named}"
            )
        return tag

    def _write(self, engine, staging: Path, tag: str, state: dict, step: int, fault) -> str | None:
        try:
            engine.save_checkpoint(str(staging), tag=tag, client_state={"megameta": state}, save_latest=False)
            torch.save(ckpt.rng_state(), staging / tag / f"rng_rank{self.rank}.pt")
            fault("save", step)
        except (OSError, RuntimeError) as e:  # torch.save reports ENOSPC as RuntimeError
            return f"rank {self.rank}: {e}".splitlines()[0]
        return None

    def _checksums(self, stage: Path) -> tuple[str | None, dict]:
        """Every rank hashes the files it wrote (``owner_rank``), in threads, while the others hash
        theirs; returns (the first rank's error or None, every rank's records merged)."""
        try:
            names = [n for n in ckpt.staged_files(stage) if ckpt.owner_rank(n, self.world) == self.rank]
            mine, error = ckpt.file_records(stage, names, self.hash_workers), None
        except OSError as e:
            mine, error = {}, f"rank {self.rank}: {e}".splitlines()[0]
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, (error, mine))
        error = next((e for e, _ in gathered if e is not None), None)
        return error, {name: rec for _, records in gathered for name, rec in records.items()}

    def _checkpoint_bytes(self, engine) -> int:
        """Expected size of one checkpoint: the newest one's, else fp32 weights + Adam state (16 B/param)."""
        tags = ckpt.list_tags(self.root)
        if tags:
            return sum(p.stat().st_size for p in (self.root / tags[-1]).rglob("*") if p.is_file())
        return 16 * sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters()) + (1 << 20)

    def _agree(self, error: str | None) -> str | None:
        """Every rank learns whether any rank failed (and the first failing rank's reason)."""
        gathered = [None] * self.world
        dist.all_gather_object(gathered, error)
        return next((e for e in gathered if e is not None), None)

    # ---------------------------------------------------------------- done
    def write_done(self, done: dict) -> None:
        """Mark the phase finished (rank 0): ``DONE.json`` with its final tag, tokens and valid loss."""
        if self.is_main:
            write_atomic(self.layout.done, json.dumps(done, indent=2))


def load_init_weights(model: torch.nn.Module, init: InitFrom, phase: str, log: Callable[[str], None]) -> dict:
    """Phase hand-off: the weights only (optimizer and schedule start fresh). Returns the provenance
    recorded in DONE.json: the source and the sha256 of the weights as loaded.

    A model partitioned by ZeRO-3 (built under ``zero.Init``) is loaded one parameter at a time: rank 0
    reads the source and writes each gathered parameter, which DeepSpeed then re-partitions, so no
    other rank reads the file or holds the whole model. Every rank raises the same error."""
    from megameta.checkpoint import load_weights, state_dict_digest

    shapes = {
        name: tuple(getattr(p, "ds_shape", p.shape))
        for name, p in model.named_parameters(remove_duplicate=False)
    }
    partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    reader = not partitioned or dist.get_rank() == 0
    state, found, error = {}, [None, None], None
    if reader:
        try:
            if not init.path.exists():
                hint = f" (train phase '{init.phase}' first)" if init.phase else ""
                raise InputError(f"phases: {phase}.init_from: {init.path} does not exist{hint}")
            state, where = load_weights(init.path)
            _check_fits(state, shapes, where)
            found = [str(where), state_dict_digest(state)]
        except InputError as exc:
            error = str(exc)
    if partitioned:
        shared = [error, *found]
        dist.broadcast_object_list(shared, src=0)
        error, *found = shared
    if error is not None:
        raise InputError(error)
    if partitioned:
        import deepspeed

        for name, p in model.named_parameters():
            with deepspeed.zero.GatheredParameters([p], modifier_rank=0), torch.no_grad():
                if reader:
                    p.copy_(state[name])
    else:
        model.load_state_dict(state, strict=False)
    where, digest = found
    log(f"[train] {phase}: initialized from {where} (weights sha256 {digest[:12]})")
    return {"source": where, "weights_sha256": digest}


def _check_fits(state: dict[str, torch.Tensor], shapes: dict[str, tuple], where: Path) -> None:
    """InputError unless ``state`` holds exactly the model's parameters (the tied decoder weight may
    be absent), each in the model's shape."""
    for name, tensor in state.items():
        if name in shapes and shapes[name] != tuple(tensor.shape):
            raise InputError(
                f"{where}: {name} has shape {list(tensor.shape)} but the model needs {list(shapes[name])} "
                f"(different vocabulary or model size?)"
            )
    missing = [k for k in shapes if k not in state and not k.endswith("lm_head.decoder.weight")]
    unexpected = [k for k in state if k not in shapes]
    if missing or unexpected:
        raise InputError(
            f"{where}: weights do not fit model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
