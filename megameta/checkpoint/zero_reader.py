"""Read the fp32 weights of a DeepSpeed checkpoint (ZeRO 0-3, any world size) without DeepSpeed.

Memory: weights are streamed as pieces, one rank's file at a time (see
:meth:`CheckpointReader.pieces`), so a caller can write them straight to their final place
without holding a full copy. Rank files are opened with ``torch.load(mmap=True)``:
unpickling reads only the object graph; tensor bytes are paged in on first touch, and we
touch only the fp32 master partition, never Adam's ``exp_avg``/``exp_avg_sq`` next to it.
Pages already consumed are handed back to the kernel (``madvise(MADV_DONTNEED)``) so even
one rank's partition is not resident at once.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from megameta.checkpoint.meta import CheckpointMeta
from megameta.errors import InputError, MegaMetaError
from megameta.model.hf_adapter import TIED, add_tied


def _load(path: Path) -> tuple[dict, bool]:
    """Unpickle a DeepSpeed file with lazily mapped tensor data (nothing is paged in yet);
    returns the object and whether its tensors are file mappings."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False), True
    except RuntimeError:  # legacy (non-zip) serialization cannot be mapped: read it whole
        try:
            return torch.load(path, map_location="cpu", weights_only=False), False
        except Exception as e:
            raise InputError(f"cannot read {path}: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise InputError(f"cannot read {path}: {type(e).__name__}: {e}") from e


_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _release(t: torch.Tensor) -> None:
    """Drop the resident pages of a file-mapped, read-only tensor (re-read from the file if touched
    again). Only for mmap-loaded tensors: on anonymous memory MADV_DONTNEED would zero the data."""
    if _libc is None or t.numel() == 0:
        return
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    lo, hi = -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE  # whole pages inside the tensor only
    if hi > lo:
        _libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # MADV_DONTNEED


def _model_states_file(ckpt_dir: Path, stage: int) -> Path:
    name = "zero_pp_rank_0_mp_rank_00_model_states.pt" if stage == 3 else "mp_rank_00_model_states.pt"
    path = ckpt_dir / name
    if not path.exists():
        raise InputError(f"{path} missing (not a ZeRO-{stage} DeepSpeed checkpoint?)")
    return path


MOMENTS = ("exp_avg", "exp_avg_sq")
_BASE_STATE = {False: "base_optimizer_state", True: "optimizer_state_dict"}  # by "is ZeRO-3"


def _optim_files(ckpt_dir: Path) -> list[Path]:
    def rank(p: Path) -> int:
        m = re.search(r"zero_pp_rank_(\d+)_", p.name)
        return int(m.group(1)) if m else 0

    return sorted(ckpt_dir.glob("*_optim_states.pt"), key=rank)


class CheckpointReader:
    """The fp32 weights of one checkpoint dir as ``names`` (HF name -> shape) and a stream of pieces.

    What is read from each file:
    - model states (``mp_rank_00_model_states.pt``, or rank 0's ``zero_pp_rank_0_...`` for ZeRO-3):
      ``param_shapes`` (names, shapes and flat order of the parameters), ``shared_params`` and
      ``buffer_names``; for ZeRO-0 without fp32 optimizer partitions, the ``module`` tensors themselves.
    - every rank's ``*_optim_states.pt`` (ZeRO 1-3, and ZeRO-0 bf16's ``bf16_zero_pp_rank_*``), one at a
      time: the fp32 master partitions only (``single_partition_of_fp32_groups`` for ZeRO 0-2,
      ``fp32_flat_groups`` for ZeRO-3) and the scalar layout fields (``partition_count``,
      ``param_alignment_paddings``, ``zero_stage``). Adam moments are never paged in, unless ``what``
      asks for one of them (``exp_avg``, ``exp_avg_sq``: same flat layout as the fp32 partitions).
    """

    def __init__(self, ckpt_dir: Path, what: str = "fp32"):
        if what not in MOMENTS + ("fp32",):
            raise ValueError(f"what: fp32, exp_avg or exp_avg_sq, got {what!r}")
        self.dir, self.what = ckpt_dir, what
        self.stage = CheckpointMeta.read(ckpt_dir).zero_stage
        self.optim_files = _optim_files(ckpt_dir)
        states, self._mapped = _load(_model_states_file(ckpt_dir, self.stage))
        self.shared = dict(states.get("shared_params") or {})
        self.buffer_names = list(states.get("buffer_names") or [])
        groups = states.get("param_shapes")
        if self.optim_files and groups is None:
            raise InputError(
                f"{ckpt_dir}: optimizer partitions without param_shapes in the model states file"
            )
        self.module_only = not self.optim_files  # ZeRO-0 fp32: the module holds the fp32 weights
        if self.module_only:
            if what != "fp32":
                raise InputError(
                    f"{ckpt_dir}: ZeRO-0 fp32 keeps Adam's state per parameter: use optimizer_state()"
                )
            module = states["module"]
            self.groups = [{k: v.shape for k, v in module.items() if k not in TIED}]
        else:
            self.groups = [dict(g) for g in groups]
        self.names: dict[str, torch.Size] = {}
        for g in self.groups:
            for name, shape in g.items():
                self.names[TIED.get(name, name)] = torch.Size(shape)
        for name in self.buffer_names:
            if name in states["module"] and states["module"][name].is_floating_point():
                self.names[name] = states["module"][name].shape
        self._states = states

    def __len__(self) -> int:
        return max(1, len(self.optim_files))

    def progress(self, desc: str):
        """A tqdm bar over this checkpoint's rank files (pass it to :meth:`pieces`)."""
        from tqdm import tqdm

        return tqdm(total=len(self), desc=desc, unit="rank", disable=None, file=sys.stderr)

    def pieces(self, progress=None) -> Iterator[tuple[str, int, torch.Tensor]]:
        """Yield ``(name, element offset into the flattened parameter, 1-D tensor)``; each element once.

        A piece is valid until the next one is requested: its pages are then handed back to the kernel.
        """
        for item in self._pieces(progress):
            yield item
            if self._mapped:
                _release(item[2])

    def _pieces(self, progress) -> Iterator[tuple[str, int, torch.Tensor]]:
        module = self._states["module"]
        for name in self.buffer_names:
            if name in self.names:
                yield name, 0, module[name].reshape(-1)
        if self.module_only:
            for name in self.names:
                if name not in self.buffer_names:
                    yield name, 0, module[name].reshape(-1)
            if progress is not None:
                progress.update(1)
            return
        del module
        self._states = None  # the model states file's module tensors are not needed any more
        if self.stage == 3:
            yield from self._zero3(progress)
        else:
            yield from self._zero012(progress)

    def _open_rank(self, r: int, path: Path, key: str) -> tuple[list[torch.Tensor], dict]:
        obj, self._mapped = _load(path)
        osd = obj.get("optimizer_state_dict", {})
        if key not in osd:
            raise InputError(f"{path}: no {key} in the optimizer state (not a ZeRO-{self.stage} checkpoint?)")
        if self.what != "fp32":  # the torch optimizer's state of each flat group, in the same layout
            state = osd[_BASE_STATE[self.stage == 3]]["state"]
            return [state[g][self.what] for g in range(len(osd[key]))], osd
        count = osd.get("partition_count")
        count = max(count) if isinstance(count, list) else count
        if count is not None and count != len(self.optim_files):
            raise InputError(
                f"{self.dir}: {len(self.optim_files)} *_optim_states.pt files but saved by {count} ranks "
                f"(a rank's file is missing)"
            )
        return osd[key], osd

    def _zero012(self, progress) -> Iterator[tuple[str, int, torch.Tensor]]:
        """ZeRO 1/2 (and bf16 ZeRO-0): per param group, rank r holds one contiguous slice of the flat fp32 group.

        Same layout as zero_to_fp32: ranks' slices concatenated (padding already stripped) give the
        group's flat vector; parameters follow each other in ``param_shapes`` order, each followed by
        its ``param_alignment_paddings`` entry. Rank r's slice starts at r * (rank 0's slice length).
        """
        world = len(self.optim_files)
        full: list[int] = []  # rank 0's slice length per group: every rank but the last holds this many
        for r, path in enumerate(self.optim_files):
            parts, osd = self._open_rank(r, path, "single_partition_of_fp32_groups")
            paddings = osd.get("param_alignment_paddings")
            if r == 0:
                full = [p.numel() for p in parts]
                if len(parts) != len(self.groups):
                    raise InputError(f"{path}: {len(parts)} fp32 groups but {len(self.groups)} param groups")
            for g, (shapes, part) in enumerate(zip(self.groups, parts)):
                lo, hi = r * full[g], r * full[g] + part.numel()
                offset = 0
                for i, (name, shape) in enumerate(shapes.items()):
                    n = math.prod(shape)
                    a, b = max(offset, lo), min(offset + n, hi)
                    if a < b:
                        yield TIED.get(name, name), a - offset, part[a - lo : b - lo]
                    offset += n + (paddings[g][i] if paddings else 0)
                if r == world - 1 and offset > hi:
                    raise MegaMetaError(
                        f"{self.dir}: param group {g} needs {offset} fp32 elements, ranks hold {hi}"
                    )
            del parts, osd
            if progress is not None:
                progress.update(1)

    def _zero3(self, progress) -> Iterator[tuple[str, int, torch.Tensor]]:
        """ZeRO-3: each parameter is split in ``ceil(numel / world)`` elements per rank (the last padded);
        rank r's flat groups hold its slices of all parameters back to back, in ``param_shapes`` order."""
        world = len(self.optim_files)
        params = [(name, math.prod(shape)) for g in self.groups for name, shape in g.items()]
        for r, path in enumerate(self.optim_files):
            flats, _ = self._open_rank(r, path, "fp32_flat_groups")
            bounds = [0]
            for f in flats:
                bounds.append(bounds[-1] + f.numel())
            gi, offset = 0, 0
            for name, n in params:
                part = math.ceil(n / world)
                want = max(0, min(part, n - r * part))  # real (unpadded) elements of this rank's slice
                done = 0
                while done < want:
                    while offset + done >= bounds[gi + 1]:
                        gi += 1
                    a = offset + done - bounds[gi]
                    take = min(want - done, bounds[gi + 1] - (offset + done))
                    yield TIED.get(name, name), r * part + done, flats[gi][a : a + take]
                    done += take
                offset += part
            if offset != bounds[-1]:
                raise MegaMetaError(
                    f"{path}: consumed {offset} of {bounds[-1]} fp32 elements (layout mismatch)"
                )
            del flats
            if progress is not None:
                progress.update(1)


def fill(reader: CheckpointReader, targets: dict[str, torch.Tensor], desc: str = "reading") -> None:
    """Copy the checkpoint's fp32 weights into preallocated tensors (one per name in ``reader.names``)."""
    flat = {k: v.view(-1) for k, v in targets.items()}
    seen = dict.fromkeys(flat, 0)
    with reader.progress(desc) as bar:
        for name, start, piece in reader.pieces(bar):
            flat[name][start : start + piece.numel()].copy_(piece.detach())
            seen[name] += piece.numel()
    short = [k for k, v in seen.items() if v != flat[k].numel()]
    if short:
        raise MegaMetaError(f"{reader.dir}: incomplete weights for {short[:3]} (layout not understood)")


def consolidated_state_dict(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """fp32 weights from a DeepSpeed checkpoint dir (ZeRO 0-3, any world size), tied aliases included.

    Peak memory: the returned tensors (one fp32 copy) plus a few pages of the file being read.
    """
    reader = CheckpointReader(Path(ckpt_dir))
    state = {name: torch.empty(shape, dtype=torch.float32) for name, shape in reader.names.items()}
    fill(reader, state)
    return add_tied(state)


def optimizer_state(ckpt_dir: Path) -> dict:
    """Everything Adam resumes from, consolidated over ranks (any ZeRO stage, any world size), for exact
    comparison of two checkpoints: ``{"fp32"|"exp_avg"|"exp_avg_sq": {name: flat tensor}, "step": [per
    group], "param_groups": [hyperparameters per group]}``. Holds three fp32 copies of the model: tests
    and tools on small models only."""
    ckpt_dir = Path(ckpt_dir)
    reader = CheckpointReader(ckpt_dir)
    if reader.module_only:  # ZeRO-0: the torch optimizer's own state dict, per parameter index
        osd, _ = _load(_model_states_file(ckpt_dir, 0))
        wrapper = osd["optimizer"]  # bf16/fp16 wrap it, with the fp32 masters beside it
        sd = wrapper.get("optimizer_state_dict", wrapper)
        out = {k: {f"param{i}": st[k].reshape(-1) for i, st in sd["state"].items()} for k in MOMENTS}
        if "fp32_groups" in wrapper:
            masters = [t for group in wrapper["fp32_groups"] for t in group]
            out["fp32"] = {f"param{i}": t.reshape(-1) for i, t in enumerate(masters)}
        else:
            out["fp32"] = {k: v.reshape(-1).float() for k, v in osd["module"].items()}
        steps = [float(sd["state"][g["params"][0]]["step"]) for g in sd["param_groups"]]
        groups = sd["param_groups"]
    else:
        out = {}
        for what in ("fp32", *MOMENTS):
            r = CheckpointReader(ckpt_dir, what)
            out[what] = {name: torch.empty(math.prod(shape)) for name, shape in r.names.items()}
            fill(r, out[what], desc=what)
        base = _load(reader.optim_files[0])[0]["optimizer_state_dict"][_BASE_STATE[reader.stage == 3]]
        steps = [float(st["step"]) for _, st in sorted(base["state"].items())]
        groups = base["param_groups"]
    keys = ("lr", "weight_decay", "betas", "eps")
    out["step"] = steps
    out["param_groups"] = [{k: (tuple(g[k]) if k == "betas" else g[k]) for k in keys} for g in groups]
    return out
