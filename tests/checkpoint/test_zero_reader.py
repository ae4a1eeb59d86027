"""The ZeRO 0-3 reader on synthetic partitions written in DeepSpeed's file layout (no DeepSpeed run).

Stages 1/2: per param group, the flat fp32 vector (each parameter followed by its alignment
padding) is cut into equal slices, one per rank; the last rank's trailing padding is stripped.
Stage 3: each parameter is cut into ``ceil(numel / world)`` elements per rank (the last rank's
slice padded); a rank's slices lie back to back across its ``fp32_flat_groups``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from megameta.checkpoint import CheckpointMeta, CheckpointReader, consolidated_state_dict
from megameta.checkpoint.zero_reader import fill
from megameta.errors import InputError

# Two param groups (decay / no decay), odd sizes so that slices cut through parameters.
GROUPS = [
    {"roberta.embeddings.word_embeddings.weight": (7, 3), "layer.dense.weight": (5, 4)},
    {"layer.dense.bias": (5,), "lm_head.decoder.bias": (7,), "norm.weight": (1,)},
]
BUFFER = "layer.scale"  # a float buffer: read from the module states


def _originals() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=gen) for g in GROUPS for name, shape in g.items()}


def _write(ckpt, stage: int, world: int, weights: dict[str, torch.Tensor]) -> None:
    ckpt.mkdir(parents=True)
    meta = CheckpointMeta(step=1, samples_seen=1, tokens_seen=1, phase="meta", world_size=world, model={},
                          zero_stage=stage, precision="bf16")  # fmt: skip
    (ckpt / "meta.json").write_text(json.dumps(meta.to_dict()))
    # The module holds bf16 copies (bf16 training): the reader must take the fp32 master partitions.
    module = {name: t.bfloat16() for name, t in weights.items()}
    module[BUFFER] = torch.tensor([0.5, 2.0])
    states = {"module": module, "buffer_names": [BUFFER], "shared_params": {},
              "param_shapes": [{k: torch.Size(s) for k, s in g.items()} for g in GROUPS]}  # fmt: skip
    name = "zero_pp_rank_0_mp_rank_00_model_states.pt" if stage == 3 else "mp_rank_00_model_states.pt"
    torch.save(states, ckpt / name)
    for r, osd in enumerate(_zero3(world, weights) if stage == 3 else _zero12(world, weights)):
        torch.save({"optimizer_state_dict": osd}, ckpt / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt")


def _zero12(world: int, weights: dict[str, torch.Tensor]) -> list[dict]:
    slices: list[list[torch.Tensor]] = [[] for _ in range(world)]
    paddings = []
    for g in GROUPS:
        pads = [(-math.prod(s)) % 4 for s in g.values()]  # align each parameter to 4 elements
        paddings.append(pads)
        parts = []
        for (name, _), pad in zip(g.items(), pads):
            parts += [weights[name].reshape(-1), torch.full((pad,), float("nan"))]
        flat = torch.cat(parts)
        size = -(-flat.numel() // world)
        flat = torch.cat([flat, torch.full((size * world - flat.numel(),), float("nan"))])
        for r in range(world):
            piece = flat[r * size : (r + 1) * size]
            if r == world - 1:  # DeepSpeed strips the trailing padding from the last partition
                piece = piece[: max(0, sum(math.prod(s) + p for s, p in zip(g.values(), pads)) - r * size)]
            slices[r].append(piece.clone())
    return [{"single_partition_of_fp32_groups": slices[r], "param_alignment_paddings": paddings,
             "partition_count": [world] * len(GROUPS), "exp_avg": torch.zeros(3)} for r in range(world)]  # fmt: skip


def _zero3(world: int, weights: dict[str, torch.Tensor]) -> list[dict]:
    out = []
    for r in range(world):
        stream = []
        for t in weights.values():
            part = -(-t.numel() // world)
            mine = t.reshape(-1)[r * part : (r + 1) * part]
            stream.append(torch.cat([mine, torch.full((part - mine.numel(),), float("nan"))]))
        flat = torch.cat(stream)
        cut = flat.numel() // 3 + 1  # two sub-groups whose boundary falls inside a parameter
        out.append({"fp32_flat_groups": [flat[:cut].clone(), flat[cut:].clone()], "partition_count": world})
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_consolidated_weights_equal_the_originals_exactly(tmp_path, stage, world):
    weights = _originals()
    _write(tmp_path / "ckpt", stage, world, weights)
    state = consolidated_state_dict(tmp_path / "ckpt")
    # HF names: the tied alias in param_shapes is stored under its target, then both names are given.
    expect = {("lm_head.bias" if k == "lm_head.decoder.bias" else k): v for k, v in weights.items()}
    for name, t in expect.items():
        assert state[name].dtype == torch.float32 and torch.equal(state[name], t), name
    assert torch.equal(state[BUFFER], torch.tensor([0.5, 2.0]))
    assert state["lm_head.decoder.weight"] is state["roberta.embeddings.word_embeddings.weight"]
    assert state["lm_head.decoder.bias"] is state["lm_head.bias"]
    assert set(state) == set(expect) | {BUFFER, "lm_head.decoder.weight", "lm_head.decoder.bias"}


def test_pieces_cover_each_element_once_and_count_ranks(tmp_path):
    weights = _originals()
    _write(tmp_path / "ckpt", 2, 3, weights)
    reader = CheckpointReader(tmp_path / "ckpt")
    assert len(reader) == 3 and reader.stage == 2
    covered = {name: torch.zeros(shape.numel(), dtype=torch.int64) for name, shape in reader.names.items()}
    for name, start, piece in reader.pieces():
        covered[name][start : start + piece.numel()] += 1
    assert all(bool((c == 1).all()) for c in covered.values())


def test_zero0_fp32_reads_the_module(tmp_path):
    weights = _originals()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    meta = CheckpointMeta(step=0, samples_seen=0, tokens_seen=0, phase="p", world_size=1, model={},
                          zero_stage=0, precision="fp32")  # fmt: skip
    (ckpt / "meta.json").write_text(json.dumps(meta.to_dict()))
    # What engine.save_checkpoint writes for ZeRO-0 fp32: the module's state dict, tied names included.
    module = {("lm_head.bias" if k == "lm_head.decoder.bias" else k): v for k, v in weights.items()}
    module["lm_head.decoder.bias"] = module["lm_head.bias"]
    module["lm_head.decoder.weight"] = module["roberta.embeddings.word_embeddings.weight"]
    torch.save(
        {"module": module, "buffer_names": [], "param_shapes": None}, ckpt / "mp_rank_00_model_states.pt"
    )
    state = consolidated_state_dict(ckpt)
    assert set(state) == set(module) and all(torch.equal(state[k], v) for k, v in module.items())


def test_a_missing_rank_file_is_input_error(tmp_path):
    _write(tmp_path / "ckpt", 3, 3, _originals())
    (tmp_path / "ckpt" / "zero_pp_rank_2_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(InputError, match=r"2 \*_optim_states.pt files but saved by 3 ranks"):
        consolidated_state_dict(tmp_path / "ckpt")


@pytest.mark.parametrize("stage", [2, 3])
def test_adam_moments_are_read_in_the_layout_of_the_fp32_partitions(tmp_path, stage):
    weights = _originals()
    moments = {k: v * 3 + 1 for k, v in weights.items()}
    _write(tmp_path / "ckpt", stage, 2, weights)
    key, base = ("fp32_flat_groups", "optimizer_state_dict") if stage == 3 else ("single_partition_of_fp32_groups", "base_optimizer_state")  # fmt: skip
    for r, parts in enumerate(_zero3(2, moments) if stage == 3 else _zero12(2, moments)):
        path = tmp_path / "ckpt" / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
        obj = torch.load(path, weights_only=False)
        obj["optimizer_state_dict"][base] = {"state": {g: {"exp_avg": t} for g, t in enumerate(parts[key])}}
        torch.save(obj, path)
    reader = CheckpointReader(tmp_path / "ckpt", "exp_avg")
    got = {name: torch.empty(shape) for name, shape in reader.names.items()}
    fill(reader, got)
    assert torch.equal(got["layer.dense.weight"], moments["layer.dense.weight"])
    assert torch.equal(got["lm_head.bias"], moments["lm_head.decoder.bias"])
