"""Run under torchrun (2 ranks) or alone: builds the trainer's model with ``build.build_model`` and
prints one JSON line per rank.

    zero_init_probe.py size STAGE
        A 335M-parameter model built for ZeRO STAGE: parameters held by this rank, the full count, and
        the rank's memory growth during construction (peak RSS after minus RSS before: an upper bound).
    zero_init_probe.py tiny GOOD BAD
        A small model built for ZeRO-3 (partitioned) and for ZeRO-0: whether the gathered initial
        weights are bit-identical and the weight-decay groups the same; then the phase hand-off (``load_init_weights``) of the Hugging Face model
        dir GOOD into the partitioned model: whether the gathered weights equal GOOD's and the recorded
        digest; then of the model dir BAD: the error each rank raises.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import deepspeed
import psutil
import torch

from megameta.checkpoint import load_weights, state_dict_digest
from megameta.config import InitFrom
from megameta.errors import InputError
from megameta.model import ModelConfig
from megameta.train.build import build_model, seed_everything
from megameta.train.checkpointer import load_init_weights
from megameta.train.dist import exit_process
from megameta.train.optim import param_groups

SIZE = ModelConfig(  # 335M parameters, no tensor over 131 MB: "the whole model" is unmistakable in RSS
    preset="custom", vocab_size=32000, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096
)
TINY = ModelConfig(
    preset="custom", vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128
)


def _ds(stage: int) -> dict:
    return {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": stage}}


def _gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def size(stage: int) -> dict:
    seed_everything(7)
    before = psutil.Process().memory_info().rss
    model = build_model(SIZE, _ds(stage))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "held": sum(getattr(p, "ds_tensor", p).numel() for p in model.parameters()),
        "params": sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()),
        "growth": peak - before,
    }


def tiny(good: Path, bad: Path) -> dict:
    seed_everything(7)
    partitioned = build_model(TINY, _ds(3))
    seed_everything(7)
    whole = build_model(TINY, _ds(0))
    groups = [[len(g["params"]) for g in param_groups(m, 0.01)] for m in (partitioned, whole)]
    out = {"partitioned": all(hasattr(p, "ds_id") for p in partitioned.parameters()),
           "init_identical": _equal(_gathered(partitioned), whole.state_dict()),
           "decay_groups_same": groups[0] == groups[1] and min(groups[0]) > 0}  # fmt: skip
    done = load_init_weights(partitioned, InitFrom(path=good, phase=None), "xlingual", lambda m: None)
    source, _ = load_weights(good)
    loaded = _gathered(partitioned)
    out["handoff_equal"] = all(torch.equal(loaded[k], source[k]) for k in source)
    out["digest_ok"] = done["weights_sha256"] == state_dict_digest(loaded) == state_dict_digest(source)
    try:
        load_init_weights(partitioned, InitFrom(path=bad, phase=None), "xlingual", lambda m: None)
    except InputError as exc:
        out["bad_error"] = str(exc)
    return out


def main() -> None:
    if "RANK" in os.environ:
        deepspeed.init_distributed("gloo")
    kind = sys.argv[1]
    result = size(int(sys.argv[2])) if kind == "size" else tiny(Path(sys.argv[2]), Path(sys.argv[3]))
    print(json.dumps({"rank": int(os.environ.get("RANK", 0)), **result}), flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    exit_process(0)


if __name__ == "__main__":
    main()
