"""AdamW for a phase: parameter groups, and the kernel (torch fused/foreach, apex, or DeepSpeed's CPU Adam)."""

from __future__ import annotations

import torch

from megameta.config import OptimConfig, ResolvedPhase
from megameta.train.ds_config import uses_offload


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (1-D parameters). A parameter
    partitioned by ``zero.Init`` is judged by its full shape (``ds_shape``), not its empty placeholder."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if len(getattr(p, "ds_shape", p.shape)) < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    groups: list[dict], optim: OptimConfig, phase: ResolvedPhase, ds_config: dict, device: torch.device
) -> torch.optim.Optimizer | None:
    """The optimizer to hand ``deepspeed.initialize``; None when DeepSpeed builds its own.

    ZeRO-Offload steps the optimizer on the CPU with DeepSpeed's own Adam, so it is declared in
    ``ds_config`` (edited here) instead of being built.
    """
    hyper = {
        "lr": phase.lr,
        "betas": tuple(optim.betas),
        "eps": optim.eps,
        "weight_decay": optim.weight_decay,
    }
    if uses_offload(ds_config):
        ds_config["optimizer"] = {"type": "AdamW", "params": {**hyper, "betas": list(optim.betas)}}
        return None
    from megameta.kernels import build_adamw

    return build_adamw(groups, device=device, kernel=optim.kernel, **hyper)
