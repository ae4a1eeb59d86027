"""Verification of a converted HF dir: transformers must load it and give our model's logits."""

from __future__ import annotations

from pathlib import Path

import torch

from megameta.checkpoint.zero_reader import CheckpointReader, fill
from megameta.errors import MegaMetaError
from megameta.model import ModelConfig, XLMRForMaskedLM
from megameta.model.hf_adapter import hf_config_dict, to_hf_config

#: max |logit difference| accepted for fp32 output (bf16/fp16 output: ``LOW_PRECISION_TOL``).
VERIFY_TOL = 1e-4
LOW_PRECISION_TOL = 5e-2


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
        fill(state, {k: own[k] for k in state.names}, desc="verify: reading")
    else:
        ours.load_state_dict(state, strict=False)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
    del ours
    hf = AutoModelForMaskedLM.from_pretrained(str(out_dir), attn_implementation="eager").float().eval()
    got, want = hf.config.to_dict(), to_hf_config(cfg).to_dict()
    skip = ("architectures", "dtype", "transformers_version")
    bad = [k for k in hf_config_dict(cfg) if k not in skip and got.get(k) != want.get(k)]
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
