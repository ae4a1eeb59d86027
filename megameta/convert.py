"""Training checkpoint (any ZeRO stage, any world size) -> Hugging Face model dir, and back.

``megameta convert CKPT OUT`` writes ``config.json``, ``model.safetensors`` (or
``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json`` above
``--shard-size``), the tokenizer files and ``megameta_provenance.json`` (source
checkpoint, step, tokens, phase, config hash), then verifies that ``transformers``
loads the dir and gives the same logits as our model on a fixed batch.

Memory: the exact fp32 weights are streamed, one rank's file at a time, straight
into the output files at their final byte offsets, so no full copy of the model is
ever held (see :func:`_pieces` for exactly what is read from each file). Rank files
are opened with ``torch.load(mmap=True)``: unpickling reads only the object graph;
tensor bytes are paged in on first touch, and we touch only the fp32 master
partition, never Adam's ``exp_avg``/``exp_avg_sq`` next to it. Pages already copied
are handed back to the kernel (``madvise(MADV_DONTNEED)``) so even one rank's
partition is not resident at once.

``megameta convert --from-hf HF_DIR OUT`` goes the other way: OUT becomes a
weights-only checkpoint (``OUT/checkpoints/step_00000000`` in DeepSpeed's ZeRO-0
layout, plus ``OUT/tokenizer``) that ``phases[i].init_from=OUT`` starts training
from, and that ``megameta convert OUT HF2`` turns back into a bitwise-equal HF dir.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import mmap
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from megameta.configtools import from_dict
from megameta.errors import InputError, MegaMetaError
from megameta.model import ModelConfig, XLMRForMaskedLM, from_hf_config, to_hf_config
from megameta.model.hf_adapter import hf_weight_files, is_hf_dir
from megameta.train import checkpoint as ckpt

VERIFY_TOL = 1e-4
DEFAULT_SHARD_SIZE = "2GB"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ST_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
#: tied alias -> the parameter stored (Hugging Face saves only the right-hand names).
TIED = {
    "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}
PROVENANCE = "megameta_provenance.json"


# ------------------------------------------------------------------ reading a checkpoint
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
      ``param_alignment_paddings``, ``zero_stage``). Adam moments are never paged in.
    """

    def __init__(self, ckpt_dir: Path):
        self.dir = ckpt_dir
        meta = ckpt.read_meta(ckpt_dir)
        self.stage = int(meta.get("zero_stage") or 0)
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


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rank", disable=None, file=sys.stderr)


def _fill(reader: CheckpointReader, targets: dict[str, torch.Tensor], desc: str = "reading") -> None:
    """Copy the checkpoint's fp32 weights into preallocated tensors (one per name in ``reader.names``)."""
    flat = {k: v.view(-1) for k, v in targets.items()}
    seen = dict.fromkeys(flat, 0)
    with _progress(len(reader), desc) as bar:
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
    _fill(reader, state)
    for alias, target in TIED.items():
        if target in state:
            state[alias] = state[target]
    return state


# ------------------------------------------------------------------ writing safetensors
def parse_size(text: str | int) -> int:
    """'2GB' -> 2e9 bytes, '500MiB' -> 500 * 2**20 (Hugging Face's convention); ints pass through."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise InputError(f"--shard-size: expected a size like 2GB or 500MiB, got {text!r}")
    unit = (m.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    scale |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    return int(float(m.group(1)) * scale[unit])


class SafetensorsWriter:
    """Safetensors file(s) whose headers are written first; tensor bytes then land at their final offsets
    in any order (``write(name, element_offset, piece)``), so nothing is buffered in memory."""

    def __init__(self, out_dir: Path, names: dict[str, torch.Size], dtype: torch.dtype, shard_size: int):
        self.dtype, self.esize = dtype, torch.empty((), dtype=dtype).element_size()
        shards: list[list[str]] = [[]]
        size = 0
        for name, shape in names.items():
            nbytes = math.prod(shape) * self.esize
            if shards[-1] and size + nbytes > shard_size:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += nbytes
        n = len(shards)
        files = (
            ["model.safetensors"]
            if n == 1
            else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        self.where: dict[str, tuple[int, int]] = {}  # name -> (fd, byte offset of its data)
        self.fds, self.total = [], 0
        self.written = dict.fromkeys(names, 0)
        self.numel = {k: math.prod(v) for k, v in names.items()}
        for fname, members in zip(files, shards):
            header: dict = {"__metadata__": {"format": "pt"}}
            pos = 0
            for name in members:
                nbytes = self.numel[name] * self.esize
                header[name] = {
                    "dtype": _ST_DTYPE[dtype],
                    "shape": list(names[name]),
                    "data_offsets": [pos, pos + nbytes],
                }
                pos += nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            fd = os.open(out_dir / fname, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.pwrite(fd, len(raw).to_bytes(8, "little") + raw, 0)
            os.ftruncate(fd, 8 + len(raw) + pos)
            base = 8 + len(raw)
            for name in members:
                self.where[name] = (fd, base + header[name]["data_offsets"][0])
            self.fds.append(fd)
            self.total += pos
        if n > 1:
            index = {
                "metadata": {"total_size": self.total},
                "weight_map": {k: files[i] for i, m in enumerate(shards) for k in m},
            }
            (out_dir / "model.safetensors.index.json").write_text(
                json.dumps(index, indent=2, sort_keys=True) + "\n"
            )
        self.files = files

    def write(self, name: str, start: int, piece: torch.Tensor) -> None:
        fd, base = self.where[name]
        data = piece.detach().to(self.dtype).contiguous()
        raw = data.view(torch.int16) if self.esize == 2 else data  # numpy has no bfloat16
        buf = memoryview(raw.numpy()).cast("B")
        off, done = base + start * self.esize, 0
        while done < len(buf):
            done += os.pwrite(fd, buf[done:], off + done)
        self.written[name] += piece.numel()

    def close(self, check: bool = True) -> None:
        for fd in self.fds:  # no fsync: the dir only gets its final name once complete
            os.close(fd)
        self.fds = []
        if not check:
            return
        short = [k for k, n in self.written.items() if n != self.numel[k]]
        if short:
            raise MegaMetaError(
                f"incomplete weights written for {short[:3]} (checkpoint layout not understood)"
            )


def _write_weights(reader: CheckpointReader, out_dir: Path, dtype: torch.dtype, shard_size: int) -> list[str]:
    writer = SafetensorsWriter(out_dir, reader.names, dtype, shard_size)
    try:
        with _progress(len(reader), f"converting {reader.dir.name}") as bar:
            for name, start, piece in reader.pieces(bar):
                writer.write(name, start, piece)
    except BaseException:
        writer.close(check=False)
        raise
    writer.close()
    return writer.files


# ------------------------------------------------------------------ reading HF dirs
def _read_hf_state(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF dir in their stored dtype (tied aliases not added)."""
    files = hf_weight_files(hf_dir)
    if files is None:
        return dict(torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True))
    from safetensors.torch import load_file

    state = {}
    for f in files:
        if not f.exists():
            raise InputError(f"{f} missing (named in {hf_dir / 'model.safetensors.index.json'})")
        state.update(load_file(str(f)))
    return state


def _canonical(state: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Our model's tensors only: drop the pooler, ``position_ids`` buffers and tied aliases (refusing
    untied output embeddings, which our model cannot represent)."""
    out = {}
    for name, t in state.items():
        if name.startswith("roberta.pooler.") or name.endswith("position_ids"):
            continue  # not part of the MLM model
        out[name] = t
    for alias, target in TIED.items():
        if alias in out:
            t = out.pop(alias)
            if target in out and not torch.equal(out[target], t):
                raise InputError(f"{where}: {alias} is not tied to {target}; our model ties them")
            out.setdefault(target, t)
    return out


def load_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """fp32 state dict (tied aliases included) from an HF model dir, a phase dir, a checkpoints dir,
    a checkpoint dir or a ``--from-hf`` output dir."""
    source = Path(source)
    if is_hf_dir(source):
        state = {k: v.float() for k, v in _canonical(_read_hf_state(source), source).items()}
        for alias, target in TIED.items():
            if target in state:
                state[alias] = state[target]
        return state, source
    where = ckpt.resolve(source)
    return consolidated_state_dict(where), where


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names and fp32 values (tied duplicates counted once): equal digests, equal weights."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if k != "lm_head.decoder.weight"):
        h.update(name.encode())
        h.update(state[name].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def model_config_of(ckpt_dir: Path) -> ModelConfig:
    meta = ckpt.read_meta(ckpt_dir)
    return from_dict(ModelConfig, meta["model"], "model")


def _tokenizer_dir(ckpt_dir: Path) -> Path:
    for cand in (ckpt_dir / "tokenizer", ckpt_dir.parent.parent / "tokenizer"):
        if (cand / "sentencepiece.bpe.model").exists() or (cand / "tokenizer.json").exists():
            return cand
    raise InputError(
        f"no tokenizer found next to {ckpt_dir} (expected {ckpt_dir.parent.parent / 'tokenizer'})"
    )


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """Copy tokenizer files as they are (lossless; no transformers import needed)."""
    dst.mkdir(parents=True, exist_ok=True)
    keep = ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "added_tokens.json", "megameta_tokenizer.json")  # fmt: skip
    for name in keep:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


# ------------------------------------------------------------------ verification
def _fixed_batch(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, cfg.vocab_size - 1, (2, 16), generator=gen)
    mask = torch.ones_like(ids)
    ids[1, 12:] = cfg.pad_token_id
    mask[1, 12:] = 0
    return ids, mask


def verify_hf_dir(
    out_dir: Path,
    state: dict[str, torch.Tensor] | CheckpointReader,
    cfg: ModelConfig,
    tol: float = VERIFY_TOL,
) -> float:
    """Max |logit difference| between transformers on ``out_dir`` and our model (fp32 weights from
    ``state``, a state dict or a checkpoint reader) on a fixed batch. One model is alive at a time."""
    from transformers import AutoModelForMaskedLM

    ids, mask = _fixed_batch(cfg)
    ours = XLMRForMaskedLM(cfg).eval()
    if isinstance(state, CheckpointReader):
        own = ours.state_dict()
        _fill(state, {k: own[k] for k in state.names}, desc="verify: reading")
    else:
        ours.load_state_dict(state, strict=False)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
    del ours
    hf = AutoModelForMaskedLM.from_pretrained(str(out_dir), attn_implementation="eager").float().eval()
    got, want = hf.config.to_dict(), to_hf_config(cfg).to_dict()
    skip = ("architectures", "dtype", "transformers_version")
    bad = [k for k in _hf_config(cfg, "fp32") if k not in skip and got.get(k) != want.get(k)]
    if bad:
        raise MegaMetaError(
            f"verification failed: {out_dir / 'config.json'} reads back {bad[0]}={got.get(bad[0])!r}, "
            f"expected {want.get(bad[0])!r}"
        )
    with torch.no_grad():
        b = hf(input_ids=ids, attention_mask=mask).logits
    del hf
    valid = mask.bool()
    diff = (a[valid] - b[valid]).abs().max().item()
    if not diff <= tol:
        raise MegaMetaError(
            f"verification failed: transformers' logits differ from ours by {diff:.2e} (> {tol:.0e}) for {out_dir}"
        )
    return diff


# ------------------------------------------------------------------ checkpoint -> HF
def _hf_config(cfg: ModelConfig, dtype: str) -> dict:
    """config.json of ``to_hf_config(cfg)``, written without importing transformers (seconds of start-up);
    :func:`verify_hf_dir` checks that transformers reads it back as ``to_hf_config(cfg)``."""
    from importlib.metadata import version

    cfg = cfg.resolved()
    return {
        "architectures": ["XLMRobertaForMaskedLM"],
        "model_type": "xlm-roberta",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": 1,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "tie_word_embeddings": True,
        "is_decoder": False,
        "add_cross_attention": False,
        "classifier_dropout": None,
        "use_cache": True,
        "dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype],
        "transformers_version": version("transformers"),
    }


def _replace_dir(work: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work.rename(out_dir)


def _resolve_sizes_only(source: str | Path, tag: str | None) -> Path:
    """``ckpt.resolve`` with size checks only (the sha256 check runs alongside the conversion)."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"checkpoint path not found: {path}")
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if (path / ckpt.META).exists() and tag is None:
        found = path
    elif tag is not None:
        found = root / tag
    else:
        name = ckpt.find_valid(root, log=lambda msg: None, full=False)
        found = root / name if name else None
    if found is None or not found.is_dir() or ckpt.validate(found, full=False):
        return ckpt.resolve(source, tag)  # raises InputError with the precise reason
    return found


def convert(
    source: str | Path,
    out_dir: str | Path,
    tag: str | None = None,
    dtype: str = "fp32",
    verify: bool = True,
    shard_size: str | int = DEFAULT_SHARD_SIZE,
) -> dict:
    """Write an HF model dir for the newest valid checkpoint in ``source`` (or ``tag``); returns the provenance.

    File sizes are always checked against meta.json (a half-written checkpoint is an InputError).
    With ``verify`` (the default) the sha256 checksums are also checked, in a background thread
    while the weights stream (hashing releases the GIL), and the output's logits are compared with
    our model's; on a checksum mismatch nothing is written and, without ``tag``, the newest intact
    checkpoint is converted instead, as ``ckpt.resolve`` would pick it. ``verify=False`` skips
    both (the fast path: no transformers import, no re-hash of optimizer files).
    """
    from concurrent.futures import ThreadPoolExecutor

    if dtype not in DTYPES:
        raise InputError(f"--dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    limit = parse_size(shard_size)
    ckpt_dir = _resolve_sizes_only(source, tag)
    if not verify:
        return _convert(ckpt_dir, Path(out_dir), dtype, verify, limit, lambda: None)
    with ThreadPoolExecutor(1) as pool:
        checksums = pool.submit(ckpt.validate, ckpt_dir, True)
        try:
            return _convert(ckpt_dir, Path(out_dir), dtype, verify, limit, checksums.result)
        except _Corrupt:
            pass
    return _convert(ckpt.resolve(source, tag), Path(out_dir), dtype, verify, limit, lambda: None)


class _Corrupt(Exception):
    pass


def _convert(ckpt_dir: Path, out_dir: Path, dtype: str, verify: bool, limit: int, checked) -> dict:
    cfg = model_config_of(ckpt_dir)
    meta = ckpt.read_meta(ckpt_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        try:
            reader = CheckpointReader(ckpt_dir)
            expected = {k: torch.Size(v.shape) for k, v in _expected_shapes(cfg).items()}
            if dict(reader.names) != expected:
                _raise_shape_mismatch(
                    ckpt_dir, dict(reader.names), expected, "the checkpoint", "its model config"
                )
            files = _write_weights(reader, work, DTYPES[dtype], limit)
        except Exception:
            if checked() is not None:  # a corrupt file explains the failure better than its symptom
                raise _Corrupt from None
            raise
        (work / "config.json").write_text(json.dumps(_hf_config(cfg, dtype), indent=2, sort_keys=True) + "\n")
        _copy_tokenizer(_tokenizer_dir(ckpt_dir), work)
        if checked() is not None:
            raise _Corrupt
        provenance = {
            "source_checkpoint": str(ckpt_dir.resolve()),
            "tag": ckpt_dir.name,
            "step": meta.get("step"),
            "tokens": meta.get("tokens_seen"),
            "phase": meta.get("phase"),
            "zero_stage": meta.get("zero_stage"),
            "world_size": meta.get("world_size"),
            "precision": meta.get("precision"),
            "config_sha256": hashlib.sha256(
                json.dumps(meta.get("config"), sort_keys=True).encode()
            ).hexdigest(),
            "dtype": dtype,
            "weight_files": files,
        }
        if verify:
            provenance["verify_max_abs_diff"] = verify_hf_dir(
                work, CheckpointReader(ckpt_dir), cfg, tol=VERIFY_TOL if dtype == "fp32" else 5e-2
            )
        (work / PROVENANCE).write_text(json.dumps(provenance, indent=2))
        _replace_dir(work, out_dir)
        return provenance
    finally:
        shutil.rmtree(work, ignore_errors=True)


def hf_model_config(hf_dir: str | Path) -> ModelConfig:
    from transformers import AutoConfig

    return from_hf_config(AutoConfig.from_pretrained(str(hf_dir)))


# ------------------------------------------------------------------ HF -> checkpoint
def _expected_shapes(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our model's tensors (on the meta device: no memory) under the names HF stores."""
    import dataclasses
    from unittest import mock

    def skip(tensor, *args, **kwargs):
        return tensor

    # Random init on meta tensors is pointless and would import torch._dynamo (seconds).
    inits = ("normal_", "uniform_", "zeros_", "ones_", "kaiming_uniform_", "trunc_normal_")
    with torch.device("meta"), mock.patch.multiple(torch.nn.init, **dict.fromkeys(inits, skip)):
        model = XLMRForMaskedLM(dataclasses.replace(cfg, compile=False))
    return {k: v for k, v in model.state_dict().items() if k not in TIED}


def _raise_shape_mismatch(where, got: dict, want: dict, got_what: str, want_what: str) -> None:
    for name, shape in want.items():
        if name not in got:
            raise InputError(
                f"{where}: tensor {name} missing from {got_what} ({want_what} expects {list(shape)})"
            )
        if tuple(got[name]) != tuple(shape):
            raise InputError(
                f"{where}: tensor {name} has shape {list(got[name])} in {got_what} but {want_what} expects {list(shape)}"
            )
    extra = sorted(set(got) - set(want))
    if extra:
        raise InputError(f"{where}: {got_what} has tensors {want_what} does not know: {extra[:3]}")


def _vocab_of(tok_dir: Path) -> list[str] | None:
    tj = tok_dir / "tokenizer.json"
    if tj.exists():
        model = json.loads(tj.read_text())["model"]
        vocab = model.get("vocab")
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            pieces = [p[0] for p in vocab]
        elif isinstance(vocab, dict):
            pieces = [p for p, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        else:
            return None
        added = json.loads(tj.read_text()).get("added_tokens", [])
        for tok in added:
            if tok["id"] >= len(pieces):
                pieces.extend([""] * (tok["id"] + 1 - len(pieces)))
            pieces[tok["id"]] = tok["content"]
        return pieces
    return None


def _check_vocab(hf_tok: Path, run_tok: Path) -> None:
    a, b = _vocab_of(hf_tok), _vocab_of(run_tok)
    if a is None or b is None:
        return
    if len(a) != len(b):
        raise InputError(
            f"vocabularies differ: {hf_tok} has {len(a)} tokens, the run's tokenizer {run_tok} has {len(b)}"
        )
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            raise InputError(f"vocabularies differ: token {i} is {x!r} in {hf_tok} but {y!r} in {run_tok}")


def from_hf(hf_dir: str | Path, out_dir: str | Path, run_config=None) -> dict:
    """HF XLM-R dir -> weights-only checkpoint dir for ``init_from`` (and for ``convert`` back).

    With ``run_config`` (a ``RunConfig``), the HF weights must fit its model exactly and the HF
    tokenizer must have the same vocabulary as the run's tokenizer (when that exists).
    """
    from megameta.config import dump_config

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not hf_dir.is_dir():
        raise InputError(f"--from-hf: {hf_dir} is not a directory")
    if not is_hf_dir(hf_dir):
        raise InputError(
            f"--from-hf: {hf_dir} is not a Hugging Face model dir (config.json + model.safetensors)"
        )
    cfg_json = json.loads((hf_dir / "config.json").read_text())
    if cfg_json.get("model_type") not in ("xlm-roberta", "roberta"):
        raise InputError(
            f"{hf_dir / 'config.json'}: model_type {cfg_json.get('model_type')!r} is not xlm-roberta"
        )
    cfg = hf_model_config(hf_dir)
    tok_src = hf_dir
    if not ((hf_dir / "sentencepiece.bpe.model").exists() or (hf_dir / "tokenizer.json").exists()):
        raise InputError(f"{hf_dir}: no tokenizer files (sentencepiece.bpe.model or tokenizer.json)")
    state = _canonical(_read_hf_state(hf_dir), hf_dir)
    got = {k: v.shape for k, v in state.items()}
    _raise_shape_mismatch(
        hf_dir, got, {k: v.shape for k, v in _expected_shapes(cfg).items()}, "the weights", "config.json"
    )
    run_cfg_dict = None
    if run_config is not None:
        want = run_config.model.resolved()
        run_tok = run_config.tokenizer_dir
        if want.vocab_size == 0 and (run_tok / "tokenizer.json").exists():
            want.vocab_size = len(_vocab_of(run_tok) or []) or cfg.vocab_size
        elif want.vocab_size == 0:
            want.vocab_size = cfg.vocab_size
        _raise_shape_mismatch(hf_dir, got, {k: v.shape for k, v in _expected_shapes(want).items()},
                              "the HF weights", "the run config's model")  # fmt: skip
        for name in ("pad_token_id", "max_position_embeddings", "layer_norm_eps"):
            if getattr(want, name) != getattr(cfg, name):
                raise InputError(
                    f"model.{name}: the run config has {getattr(want, name)}, {hf_dir} has {getattr(cfg, name)}"
                )
        if run_tok.exists():
            _check_vocab(hf_dir, run_tok)
        run_cfg_dict = dump_config(run_config)
        # Keep the run's execution options (dropout, compile, ...) with the HF architecture.
        cfg = want
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        _copy_tokenizer(tok_src, work / "tokenizer")
        module = {k: state[k].float().contiguous() for k in _expected_shapes(cfg)}
        for alias, target in TIED.items():
            module[alias] = module[target]
        root, tag = work / "checkpoints", ckpt.tag_for(0)
        stage = ckpt.staging_dir(root, tag) / tag
        stage.mkdir(parents=True)
        info = {"step": 0, "samples_seen": 0, "tokens_seen": 0, "phase": "from_hf", "world_size": 1}
        import deepspeed

        # DeepSpeed's ZeRO-0 layout (what engine.save_checkpoint writes), without optimizer state.
        torch.save(
            {"module": module, "buffer_names": [], "optimizer": None, "param_shapes": None, "shared_params": None,
             "dp_world_size": 1, "mp_world_size": 1, "ds_version": deepspeed.__version__, "megameta": info},
            stage / "mp_rank_00_model_states.pt",
        )  # fmt: skip
        meta = {
            **info,
            "model": dump_config(cfg),
            "config": run_cfg_dict,
            "zero_stage": 0,
            "precision": "fp32",
            "tokenizer": "../../tokenizer",
            "source_hf_dir": str(hf_dir.resolve()),
        }
        ckpt.finalize(root, tag, meta)
        provenance = {"source_hf_dir": str(hf_dir.resolve()), "checkpoint": str(out_dir / "checkpoints" / tag),
                      "config_checked": run_cfg_dict is not None, "weights_sha256": state_dict_digest(module)}  # fmt: skip
        (work / PROVENANCE).write_text(json.dumps(provenance, indent=2))
        _replace_dir(work, out_dir)
        return provenance
    finally:
        shutil.rmtree(work, ignore_errors=True)
