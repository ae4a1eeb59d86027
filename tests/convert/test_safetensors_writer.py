"""The streaming safetensors writer (pieces in any order, sharding by size) and ``--shard-size`` parsing."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from megameta.convert import SafetensorsWriter, parse_size
from megameta.errors import InputError, MegaMetaError

SHAPES = {"emb.weight": (11, 4), "dense.weight": (6, 5), "dense.bias": (6,), "norm.weight": (3,)}


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}


def _write_shuffled(out, tensors, dtype, shard_size, seed=0) -> SafetensorsWriter:
    """Cut every tensor into pieces of 1-7 elements and write them in random order."""
    pieces = []
    rng = random.Random(seed)
    for name, t in tensors.items():
        flat, start = t.reshape(-1), 0
        while start < flat.numel():
            n = rng.randint(1, 7)
            pieces.append((name, start, flat[start : start + n]))
            start += n
    rng.shuffle(pieces)
    writer = SafetensorsWriter(out, {k: torch.Size(s) for k, s in SHAPES.items()}, dtype, shard_size)
    for name, start, piece in pieces:
        writer.write(name, start, piece)
    writer.close()
    return writer


def _load_all(out) -> dict[str, torch.Tensor]:
    state = {}
    for f in sorted(out.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pieces_written_out_of_order_give_the_exact_tensors(tmp_path, dtype):
    tensors = _tensors()
    writer = _write_shuffled(tmp_path, tensors, dtype, shard_size=10**9)
    assert writer.files == ["model.safetensors"] and not (tmp_path / "model.safetensors.index.json").exists()
    got = load_file(str(tmp_path / "model.safetensors"))
    assert set(got) == set(tensors)
    assert all(got[k].dtype == dtype and torch.equal(got[k], t.to(dtype)) for k, t in tensors.items())


def test_sharding_by_size_writes_an_index_hugging_face_reads(tmp_path):
    tensors = _tensors()
    limit = 150  # bytes: emb.weight alone (176 B) exceeds it and gets a file of its own
    writer = _write_shuffled(tmp_path, tensors, torch.float32, shard_size=limit, seed=3)
    n = len(writer.files)
    assert n == 3 and writer.files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in tensors.values())
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == set(writer.files)
    for f in writer.files:
        members = load_file(str(tmp_path / f))
        size = sum(t.numel() * 4 for t in members.values())
        assert size <= limit or len(members) == 1, f
        assert all(index["weight_map"][k] == f for k in members)
    got = _load_all(tmp_path)
    assert all(torch.equal(got[k], t) for k, t in tensors.items())


def test_an_incompletely_written_tensor_is_an_error(tmp_path):
    writer = SafetensorsWriter(tmp_path, {"a": torch.Size([4])}, torch.float32, 10**9)
    writer.write("a", 0, torch.ones(3))
    with pytest.raises(MegaMetaError, match="incomplete weights written for \\['a'\\]"):
        writer.close()


@pytest.mark.parametrize(
    "text, size",
    [("2GB", 2 * 10**9), ("500MiB", 500 * 2**20), ("1.5kb", 1500), (" 10 ", 10), ("3 TiB", 3 * 2**40),
     ("7B", 7), (123, 123)],
)  # fmt: skip
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "5XB", "-1GB", "1e9", "GB", "2 G B"])
def test_parse_size_rejects_what_is_not_a_size(text):
    with pytest.raises(InputError, match=r"--shard-size: expected a size like 2GB or 500MiB, got"):
        parse_size(text)
