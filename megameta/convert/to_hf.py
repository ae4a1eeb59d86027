"""Training checkpoint (any ZeRO stage, any world size) -> Hugging Face model dir.

``megameta convert CKPT OUT`` writes ``config.json``, ``model.safetensors`` (or
``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json`` above
``--shard-size``), the tokenizer files and ``megameta_provenance.json`` (source
checkpoint, step, tokens, phase, config hash), then verifies that ``transformers``
loads the dir and gives the same logits as our model on a fixed batch.

Memory: the exact fp32 weights stream from :class:`~megameta.checkpoint.CheckpointReader`,
one rank's file at a time, straight into the output files at their final byte offsets
(:class:`~megameta.convert.safetensors.SafetensorsWriter`), so no full copy of the model is
ever held.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from megameta.checkpoint import CheckpointMeta, CheckpointReader, check_integrity, resolve
from megameta.configtools import from_dict
from megameta.convert.outdir import PROVENANCE, copy_tokenizer, has_tokenizer, staged_dir
from megameta.convert.safetensors import SafetensorsWriter, parse_size
from megameta.convert.verify import LOW_PRECISION_TOL, VERIFY_TOL, verify_hf_dir
from megameta.errors import InputError
from megameta.layout import TOKENIZER, tokenizer_of_checkpoint
from megameta.model import ModelConfig
from megameta.model.hf_adapter import check_shapes, expected_shapes, hf_config_dict

DEFAULT_SHARD_SIZE = "2GB"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    checkpoint is converted instead, as ``resolve`` would pick it. ``verify=False`` skips
    both (the fast path: no transformers import, no re-hash of optimizer files).
    """
    if dtype not in DTYPES:
        raise InputError(f"--dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    limit = parse_size(shard_size)
    ckpt_dir = resolve(source, tag, full=False, log=lambda msg: None)
    if not verify:
        return _convert(ckpt_dir, Path(out_dir), dtype, verify, limit, lambda: None)
    with ThreadPoolExecutor(1) as pool:
        checksums = pool.submit(check_integrity, ckpt_dir, True)
        try:
            return _convert(ckpt_dir, Path(out_dir), dtype, verify, limit, checksums.result)
        except _Corrupt:
            pass
    return _convert(resolve(source, tag), Path(out_dir), dtype, verify, limit, lambda: None)


class _Corrupt(Exception):
    """The background checksum pass found a damaged file: convert another checkpoint (or say why not)."""


def _convert(ckpt_dir: Path, out_dir: Path, dtype: str, verify: bool, limit: int, checked) -> dict:
    meta = CheckpointMeta.read(ckpt_dir)
    cfg = _model_config(meta, ckpt_dir)
    with staged_dir(out_dir) as work:
        try:
            reader = CheckpointReader(ckpt_dir)
            want = expected_shapes(cfg)
            if dict(reader.names) != want:
                check_shapes(ckpt_dir, dict(reader.names), want, "the checkpoint", "its model config")
            files = _write_weights(reader, work, DTYPES[dtype], limit)
        except Exception:
            if checked() is not None:  # a corrupt file explains the failure better than its symptom
                raise _Corrupt from None
            raise
        config = hf_config_dict(cfg, dtype)
        (work / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copy_tokenizer(_tokenizer_dir(ckpt_dir), work)
        if checked() is not None:
            raise _Corrupt
        provenance = {
            "source_checkpoint": str(ckpt_dir.resolve()),
            "tag": ckpt_dir.name,
            "step": meta.step,
            "tokens": meta.tokens_seen,
            "phase": meta.phase,
            "zero_stage": meta.zero_stage,
            "world_size": meta.world_size,
            "precision": meta.precision,
            "config_sha256": hashlib.sha256(json.dumps(meta.config, sort_keys=True).encode()).hexdigest(),
            "dtype": dtype,
            "weight_files": files,
        }
        if verify:
            tol = VERIFY_TOL if dtype == "fp32" else LOW_PRECISION_TOL
            provenance["verify_max_abs_diff"] = verify_hf_dir(work, CheckpointReader(ckpt_dir), cfg, tol=tol)
        (work / PROVENANCE).write_text(json.dumps(provenance, indent=2))
    return provenance


def _write_weights(reader: CheckpointReader, out_dir: Path, dtype: torch.dtype, shard_size: int) -> list[str]:
    writer = SafetensorsWriter(out_dir, reader.names, dtype, shard_size)
    try:
        with reader.progress(f"converting {reader.dir.name}") as bar:
            for name, start, piece in reader.pieces(bar):
                writer.write(name, start, piece)
    except BaseException:
        writer.close(check=False)
        raise
    writer.close()
    return writer.files


def _model_config(meta: CheckpointMeta, ckpt_dir: Path) -> ModelConfig:
    return from_dict(ModelConfig, meta.model, f"{ckpt_dir / 'meta.json'}: model")


def model_config_of(ckpt_dir: Path) -> ModelConfig:
    """The ``ModelConfig`` a checkpoint was trained with (from its meta.json)."""
    return _model_config(CheckpointMeta.read(ckpt_dir), Path(ckpt_dir))


def _tokenizer_dir(ckpt_dir: Path) -> Path:
    """The tokenizer shipped inside the checkpoint (``--from-hf`` output), else the run's."""
    for cand in (ckpt_dir / TOKENIZER, tokenizer_of_checkpoint(ckpt_dir)):
        if has_tokenizer(cand):
            return cand
    raise InputError(f"no tokenizer found next to {ckpt_dir} (expected {tokenizer_of_checkpoint(ckpt_dir)})")
