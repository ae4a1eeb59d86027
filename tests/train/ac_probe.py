"""Activation checkpointing under a DeepSpeed ZeRO-3 engine (one CPU rank): for each mode, the bytes
saved for backward (outer saved-tensor hooks), the loss, and the full gradients. Used by
``test_activation_checkpointing.py``; prints one JSON object."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import torch

from megameta.model import ModelConfig, XLMRForMaskedLM
from megameta.train.dist import free_port

CFG = ModelConfig(preset="custom", vocab_size=500, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128,
                  hidden_dropout=0.1, attention_dropout=0.1)  # fmt: skip
MODES = {"off": (False, 1), "every_layer": (True, 1), "every_2nd": (True, 2)}


def run(mode: str) -> dict:
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    on, every = MODES[mode]
    torch.manual_seed(0)
    model = XLMRForMaskedLM(dataclasses.replace(CFG, activation_checkpointing=on, checkpoint_every=every))
    ds = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "steps_per_print": 10**9,
          "zero_optimization": {"stage": 3, "memory_efficient_linear": False}}  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=ds)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, CFG.vocab_size, (4, 64), generator=g)
    labels = torch.where(torch.rand(4, 64, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    engine.train()
    torch.manual_seed(5)  # the same dropout masks in every mode (checkpoint replays the RNG state)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = engine(ids, labels=labels)
    engine.backward(out.loss)
    grads = {n: safe_get_full_grad(p).flatten()[:64].tolist() for n, p in engine.module.named_parameters()}
    return {"saved_bytes": saved[0], "loss": out.loss.item(), "grads": grads}


if __name__ == "__main__":
    os.environ.update(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    )
    print(json.dumps({mode: run(mode) for mode in (sys.argv[1:] or MODES)}))
