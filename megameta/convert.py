"""Training checkpoint (any ZeRO stage, any world size) -> Hugging Face model dir, and back.

``megameta convert CKPT OUT`` writes ``config.json``, ``model.safetensors``, the
tokenizer files and ``megameta_provenance.json`` (source checkpoint, step,
tokens, phase, config hash), then verifies that ``transformers`` loads the dir
and gives the same logits as our model on a fixed batch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from megameta.configtools import from_dict
from megameta.errors import InputError, MegaMetaError
from megameta.model import ModelConfig, XLMRForMaskedLM, from_hf_config, to_hf_config
from megameta.train import checkpoint as ckpt

VERIFY_TOL = 1e-4


def consolidated_state_dict(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """fp32 weights from a DeepSpeed checkpoint dir (ZeRO 0-3, any world size)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir.parent), tag=ckpt_dir.name)
    return {k: v.float() for k, v in state.items()}


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names and fp32 values (tied duplicates counted once): equal digests, equal weights."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if k != "lm_head.decoder.weight"):
        h.update(name.encode())
        h.update(state[name].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def load_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """State dict from an HF model dir, a phase dir, a checkpoints dir or a checkpoint dir."""
    source = Path(source)
    if (source / "config.json").exists() and any(
        (source / f).exists() for f in ("model.safetensors", "pytorch_model.bin")
    ):
        from transformers import XLMRobertaForMaskedLM

        return XLMRobertaForMaskedLM.from_pretrained(str(source)).state_dict(), source
    where = ckpt.resolve(source)
    return consolidated_state_dict(where), where


def model_config_of(ckpt_dir: Path) -> ModelConfig:
    meta = ckpt.read_meta(ckpt_dir)
    return from_dict(ModelConfig, meta["model"], "model")


def _tokenizer_dir(ckpt_dir: Path) -> Path:
    for cand in (ckpt_dir / "tokenizer", ckpt_dir.parent.parent / "tokenizer"):
        if (cand / "sentencepiece.bpe.model").exists():
            return cand
    raise InputError(
        f"no tokenizer found next to {ckpt_dir} (expected {ckpt_dir.parent.parent / 'tokenizer'})"
    )


def verify_hf_dir(
    out_dir: Path, state: dict[str, torch.Tensor], cfg: ModelConfig, tol: float = VERIFY_TOL
) -> float:
    """Max |logit difference| between transformers on ``out_dir`` and our model on a fixed batch."""
    from transformers import AutoModelForMaskedLM

    ours = XLMRForMaskedLM(cfg)
    ours.load_state_dict(state, strict=False)
    ours.eval()
    hf = AutoModelForMaskedLM.from_pretrained(str(out_dir), attn_implementation="eager").float().eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, cfg.vocab_size - 1, (2, 16), generator=gen)
    mask = torch.ones_like(ids)
    ids[1, 12:] = cfg.pad_token_id
    mask[1, 12:] = 0
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = hf(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    diff = (a[valid] - b[valid]).abs().max().item()
    if diff > tol:
        raise MegaMetaError(
            f"verification failed: transformers' logits differ from ours by {diff:.2e} (> {tol:.0e}) for {out_dir}"
        )
    return diff


def convert(
    source: str | Path, out_dir: str | Path, tag: str | None = None, dtype: str = "fp32", verify: bool = True
) -> dict:
    """Write an HF model dir for the newest valid checkpoint in ``source`` (or ``tag``)."""
    from transformers import AutoTokenizer, XLMRobertaForMaskedLM

    ckpt_dir = ckpt.resolve(source, tag)
    cfg = model_config_of(ckpt_dir)
    meta = ckpt.read_meta(ckpt_dir)
    state = consolidated_state_dict(ckpt_dir)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        hf = XLMRobertaForMaskedLM(to_hf_config(cfg))
        missing, unexpected = hf.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "lm_head.decoder.weight"]  # tied to the word embeddings
        if missing or unexpected:
            raise InputError(
                f"{ckpt_dir}: weights do not match the model config (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        hf.to(torch_dtype).save_pretrained(str(work))
        AutoTokenizer.from_pretrained(str(_tokenizer_dir(ckpt_dir))).save_pretrained(str(work))
        provenance = {
            "source_checkpoint": str(ckpt_dir.resolve()),
            "tag": ckpt_dir.name,
            "step": meta.get("step"),
            "tokens": meta.get("tokens_seen"),
            "phase": meta.get("phase"),
            "zero_stage": meta.get("zero_stage"),
            "precision": meta.get("precision"),
            "config_sha256": hashlib.sha256(
                json.dumps(meta.get("config"), sort_keys=True).encode()
            ).hexdigest(),
            "dtype": dtype,
        }
        if verify:
            provenance["verify_max_abs_diff"] = verify_hf_dir(
                work, state, cfg, tol=VERIFY_TOL if dtype == "fp32" else 5e-2
            )
        (work / "megameta_provenance.json").write_text(json.dumps(provenance, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
        return provenance
    finally:
        shutil.rmtree(work, ignore_errors=True)


def hf_model_config(hf_dir: str | Path) -> ModelConfig:
    from transformers import AutoConfig

    return from_hf_config(AutoConfig.from_pretrained(str(hf_dir)))
