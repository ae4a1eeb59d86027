"""`megameta plan`: recipes plan, counts match transformers, memory matches DeepSpeed, exits name fields."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import REPO, megameta

from megameta.config import load_config
from megameta.errors import ConfigError, InputError
from megameta.plan import run_plan
from megameta.plan.core import count_params, model_config
from megameta.plan.memory import (
    Shape,
    ZeroSetup,
    activations,
    kept_checkpoints,
    max_micro_batch,
    model_states,
)

RECIPES = {"xlmr_base": 4, "xlmr_large": 8}


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """`megameta ARGS` in this process (the verb's code path without an interpreter start per call)."""
    from megameta.cli import main

    monkeypatch.chdir(REPO)

    def run(*args: str) -> Result:
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run  # recipe -> nodes of 8 GPUs it is planned for


def recipe(name: str, *overrides: str):
    return load_config(str(REPO / "configs" / name / "pipeline.yaml"), list(overrides))


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_plans(name, monkeypatch):
    monkeypatch.chdir(REPO)  # ds_configs/ paths in the recipes are relative to the checkout
    cfg = recipe(name)
    text, error = run_plan(cfg, nodes=RECIPES[name], gpus_per_node=8)
    assert error is None, text
    for section in ("memory per GPU", "largest micro-batch that fits", "xlingual", "100 languages", "data"):
        assert section in text
    plan = json.loads(run_plan(cfg, nodes=RECIPES[name], gpus_per_node=8, as_json=True)[0])
    assert plan["batch"]["global_batch"] == 8192 and plan["batch"]["seq_len"] == 512
    assert plan["model"]["vocab"] == 250002 and plan["batch"]["precision"] == "bf16"
    assert len(plan["data"]) == 100 and all(d["status"] == "missing" for d in plan["data"])
    # Steps follow from the token budgets: XLM-R's 1.5M updates over the two phases.
    assert plan["totals"]["steps"] == 1_500_000
    assert plan["memory"]["total"] <= plan["memory"]["usable"]


@pytest.mark.parametrize(
    ("preset", "layers", "hidden", "heads", "ffn"),
    [("base", 12, 768, 12, 3072), ("large", 24, 1024, 16, 4096)],
)
def test_param_count_equals_transformers(preset, layers, hidden, heads, ffn):
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    cfg = recipe(f"xlmr_{preset}")
    ours, _ = count_params(model_config(cfg))
    hf_cfg = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=514,
        type_vocab_size=1,
    )
    with torch.device("meta"):
        hf = XLMRobertaForMaskedLM(hf_cfg)
    assert ours == sum(p.numel() for p in hf.parameters())  # parameters() counts tied weights once


@pytest.fixture(scope="module")
def large_counts() -> tuple[int, int]:
    return count_params(model_config(recipe("xlmr_large")))


@pytest.mark.parametrize("world", [(1, 2), (1, 8), (4, 8), (16, 8)])
@pytest.mark.parametrize(
    ("stage", "offload_opt", "offload_param"), [(2, False, False), (2, True, False), (3, False, False),
                                                (3, True, False), (3, True, True)]
)  # fmt: skip
def test_model_states_within_10_percent_of_deepspeed(world, stage, offload_opt, offload_param, large_counts):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    nodes, gpn = world
    n_params, largest = large_counts
    ours = model_states(n_params, largest, ZeroSetup(stage, "bf16", offload_opt, offload_param), nodes * gpn)
    if stage == 2:
        _, theirs = estimate_zero2_model_states_mem_needs(n_params, gpn, nodes, cpu_offload=offload_opt)
    else:
        _, theirs, _ = estimate_zero3_model_states_mem_needs(
            n_params, largest, gpn, nodes, cpu_offload=offload_opt, cpu_offload_params=offload_param
        )
    assert abs(ours["total"] - theirs) <= 0.10 * theirs, (ours, theirs)


def test_plan_reports_deepspeed_estimate(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = recipe("xlmr_base", "train.deepspeed_config=ds_configs/zero3.json")
    plan = json.loads(run_plan(cfg, nodes=4, gpus_per_node=8, as_json=True)[0])
    ours, theirs = plan["memory"]["model_states"]["total"], plan["memory"]["deepspeed_estimate"]
    assert plan["batch"]["zero_stage"] == 3 and abs(ours - theirs) <= 0.10 * theirs


def test_zero_stages_order_memory():
    """Each ZeRO stage partitions more: model states per GPU strictly fall from stage 0 to 3."""
    n, largest = 560_000_000, 256_000_000
    totals = [model_states(n, largest, ZeroSetup(s, "bf16"), 64)["total"] for s in range(4)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4
    assert totals[0] == 16 * n  # 2 + 2 + 12 bytes per parameter, unpartitioned


def test_activation_checkpointing_shrinks_activations_and_grows_max_batch():
    shape = Shape(24, 1024, 4096, 16, 250002, 512, 0.15, 4096)
    without, with_ = (activations(shape, 32, 2, ck)["layers"] for ck in (False, True))
    assert with_ < without / 5
    budget = 70 << 30
    assert max_micro_batch(2 << 30, shape, 2, True, budget) > max_micro_batch(
        2 << 30, shape, 2, False, budget
    )
    b = max_micro_batch(2 << 30, shape, 2, False, budget)
    assert 2 * (1 << 30) + activations(shape, b, 2, False)["total"] <= budget
    assert 2 * (1 << 30) + activations(shape, b + 1, 2, False)["total"] > budget


def test_kept_checkpoints_replays_pruning():
    assert kept_checkpoints(4, 2, 2, 0) == (2, 2)  # saves at 2 and 4, both kept
    assert kept_checkpoints(10, 2, 2, 0) == (3, 2)  # a third is staged before the oldest is pruned
    assert kept_checkpoints(10, 2, 1, 4) == (3, 3)  # 4 and 8 (keep_every) survive beside 10


def test_micro_batch_that_cannot_fit_exits_2_naming_the_field(cli):
    proc = cli("plan", "--config", "configs/xlmr_large/pipeline.yaml", "--nodes", "8", "--gpu-memory", "16GB")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "train.micro_batch_size" in proc.stderr and "largest micro-batch that fits is" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "memory per GPU" in proc.stdout  # the table is still printed
    proc = cli(
        "plan",
        "--config",
        "configs/xlmr_large/pipeline.yaml",
        "--nodes",
        "8",
        "--gpu-memory",
        "16GB",
        "--json",
    )
    plan = json.loads(proc.stdout)
    assert proc.returncode == 2 and plan["ok"] is False and plan["error"].startswith("train.micro_batch_size")


def test_model_states_that_cannot_fit_exit_2_naming_the_field(cli):
    proc = cli("plan", "--config", "configs/xlmr_large/pipeline.yaml", "--nodes", "8", "--gpu-memory", "2GB")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "train.deepspeed_config" in proc.stderr and "zero3" in proc.stderr


def test_batch_world_mismatch_exits_2_naming_the_field():
    proc = megameta("plan", "--config", "configs/xlmr_base/pipeline.yaml")  # 1 node x 8: world 8, not 32
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "train.global_batch_size" in proc.stderr and "world of 32" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line


def test_json_parses_and_matches_flags(cli):
    proc = cli(
        "plan", "--config", "configs/xlmr_base/pipeline.yaml", "--nodes", "2", "--gpus-per-node", "8",
        "--gpu", "a100-80gb", "--mfu", "0.4", "--json", "train.grad_accum=8",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["ok"] is True and plan["error"] is None
    assert plan["cluster"] == {
        "nodes": 2, "gpus_per_node": 8, "world": 16, "gpu": "NVIDIA A100 80GB",
        "gpu_memory_gib": 80.0, "peak_tflops": 312.0, "mfu": 0.4,
    }  # fmt: skip
    assert plan["batch"]["global_batch"] == 8192 and plan["batch"]["grad_accum"] == 8
    # Wall time at a lower peak and MFU: tokens x FLOPs/token / (16 x 312e12 x 0.4).
    meta = plan["phases"][0]
    expected = meta["tokens"] * plan["model"]["flops_per_token"] / (16 * 312e12 * 0.4) / 3600
    assert meta["hours"] == pytest.approx(expected)


def test_sequence_longer_than_the_position_table_exits_2(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(
        InputError, match=r"data.max_seq_len 1024 needs model.max_position_embeddings >= 1026"
    ):
        run_plan(recipe("xlmr_base", "data.max_seq_len=1024"), nodes=4, gpus_per_node=8)


def test_bad_flags_exit_2(cli):
    for flags, field in ((["--gpu", "tpu-v9"], "--gpu"), (["--gpu-memory", "lots"], "--gpu-memory"),
                         (["--mfu", "1.5"], "--mfu")):  # fmt: skip
        proc = cli("plan", "--config", "configs/demo/pipeline.yaml", *flags)
        assert proc.returncode == 2 and field in proc.stderr, (flags, proc.stderr)


def test_batch_settings_are_checked_by_the_trainers_arithmetic(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match="train.global_batch_size"):  # the loader: 8192 % (64 x 3) != 0
        recipe("xlmr_base", "train.grad_accum=3")
    cfg = recipe("xlmr_base", "train.grad_accum=2")  # loads, but 64 x 2 x 32 GPUs = 4096, not 8192
    with pytest.raises(ConfigError, match=r"train.global_batch_size: 8192 != .* = 4096 .*world of 64"):
        run_plan(cfg, nodes=4, gpus_per_node=8)


def test_data_readiness_names_raw_hf_and_missing_sources(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "train.txt").write_text("hello world\n" * 100)
    cfg = load_config(
        str(REPO / "configs" / "demo" / "pipeline.yaml"),
        [
            f"corpus.dir={tmp_path}",
            f"run_dir={tmp_path / 'run'}",
            "data.sources={en: [en/train.txt], fr: [fr/train.txt], es: ['hf:some/dataset']}",
            "data.valid_sources={}",
            "phases=[{name: meta, langs: [en], steps: 4}, {name: x, langs: [en, fr, es], steps: 4}]",
            "baseline=[]",
        ],
    )
    rows = {d["lang"]: d for d in json.loads(run_plan(cfg, as_json=True)[0])["data"]}
    assert list(rows) == ["en", "fr", "es"]
    assert rows["en"]["status"] == "raw" and rows["en"]["bytes"] == 1200 and not rows["en"]["missing"]
    assert rows["fr"]["status"] == "missing" and rows["fr"]["missing"] == [str(tmp_path / "fr" / "train.txt")]
    assert rows["es"]["status"] == "hf"
    text, error = run_plan(cfg)
    assert error is None and f"missing fr: {tmp_path / 'fr' / 'train.txt'}" in text
