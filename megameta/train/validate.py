"""Validation MLM loss per language during training: fixed chunks, split over ranks, summed once."""

from __future__ import annotations

import numpy as np
import torch

from megameta.train.dist import all_reduce_host
from megameta.train.prefetch import model_inputs


@torch.no_grad()
def valid_loss(engine, valid, train, rank: int, world: int, device: torch.device) -> dict[str, float]:
    """Mean masked-token loss per language of ``valid`` (an MLMStream, or None: no languages):
    ``train.eval_batches`` micro-batches of ``train.micro_batch_size`` fixed chunks per language,
    rank ``r`` of ``world`` taking every world-th one. The sums stay on ``device`` until the one
    all-reduce at the end; ``engine`` is left in training mode."""
    if valid is None:
        return {}
    engine.eval()
    mb, langs = train.micro_batch_size, valid.langs
    sums = torch.zeros(len(langs), 2, dtype=torch.float64, device=device)
    for lang_id in range(len(langs)):
        for b in range(train.eval_batches):
            batch = valid.fixed_batch(lang_id, np.arange(mb) + (b * world + rank) * mb)
            out = engine(**model_inputs(batch, device))
            sums[lang_id, 0] += out.token_losses.double().sum()
            sums[lang_id, 1] += len(out.token_losses)
    sums = all_reduce_host(device, sums)
    engine.train()
    return {lang: (sums[i, 0] / sums[i, 1].clamp(min=1)).item() for i, lang in enumerate(langs)}
