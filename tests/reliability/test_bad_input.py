"""Bad input: 200+ generated config mutations and bad DeepSpeed configs fail with exit 2 and the field's name."""

from __future__ import annotations

import copy
import json
import random

import pytest
import yaml
from helpers import REPO, megameta, write_config

from megameta.config import TrainConfig, load_config
from megameta.configtools import apply_overrides, from_dict
from megameta.errors import ConfigError
from megameta.train.ds_config import render_ds_config

DEMO = REPO / "configs" / "demo" / "pipeline.yaml"
POSITIVE_INTS = [
    "tokenizer.vocab_size", "tokenizer.max_sentences", "data.workers", "data.max_seq_len",
    "train.micro_batch_size", "train.grad_accum", "train.log_every", "train.save_every", "train.keep_last",
    "train.eval_batches", "train.dist_timeout_s", "launch.nproc", "model.num_layers", "model.hidden_size",
    "model.num_heads", "evaluate.batch_size", "evaluate.max_seq_len",
]  # fmt: skip
ALPHAS = ["data.alpha", "tokenizer.alpha", "phases[1].alpha", "phases[0].alpha_end"]


def _leaves(node, path=""):
    """(dotted path, value) of every scalar/list leaf in the raw config dict."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
    else:
        yield path, node


def _wrong_type(value):
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "abc"
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {"x": value}
    if isinstance(value, dict):
        return ["not", "a", "mapping"]
    return {"bad": 1}


def mutations(n: int = 220, seed: int = 0):
    """Deterministic invalid mutations of the demo config: (label, overrides, field path the error must name)."""
    raw = yaml.safe_load(DEMO.read_text())
    leaves = [(p, v) for p, v in _leaves(raw) if v is not None]
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        kind = rng.choice(["unknown", "type", "size", "alpha", "batch", "init_from"])
        if kind == "unknown":
            parent = rng.choice(
                [
                    "",
                    "train",
                    "data",
                    "optim",
                    "model",
                    "phases[0]",
                    "phases[1]",
                    "evaluate",
                    "launch",
                    "tokenizer",
                ]
            )
            key = f"{parent}.zz_{rng.randrange(10**6)}" if parent else f"zz_{rng.randrange(10**6)}"
            out.append((kind, [f"{key}=1"], key))
        elif kind == "type":
            path, value = rng.choice(leaves)
            out.append(
                (
                    kind,
                    [f"{path}={yaml.safe_dump(_wrong_type(value), default_flow_style=True).strip()}"],
                    path,
                )
            )
        elif kind == "size":
            path = rng.choice(POSITIVE_INTS)
            out.append((kind, [f"{path}={rng.choice([0, -1, -rng.randrange(2, 10**6)])}"], path))
        elif kind == "alpha":
            path = rng.choice(ALPHAS)
            out.append((kind, [f"{path}={rng.choice([0, -0.5, 1.5, 7, -1e-9])}"], path))
        elif kind == "batch":
            micro = rng.randrange(2, 9)
            out.append(
                (
                    kind,
                    [
                        f"train.micro_batch_size={micro}",
                        f"train.global_batch_size={micro * rng.randrange(1, 9) + 1}",
                    ],
                    "train.global_batch_size",
                )
            )
        else:
            ref = rng.choice(["/nonexistent/meta/checkpoints", "./missing-phase-1", "not_a_phase"])
            out.append((kind, [f"phases[1].init_from={ref}"], "phases[1].init_from"))
    return out


def test_200_config_mutations_all_fail_with_the_field_named():
    cases = mutations()
    assert len(cases) >= 200 and len({k for k, _, _ in cases}) == 6
    for label, overrides, field in cases:
        with pytest.raises(ConfigError) as e:
            load_config(str(DEMO), overrides)
        message = str(e.value)
        assert field in message, f"{label} {overrides}: message does not name {field}: {message}"
        assert "\n" not in message


def test_config_mutations_through_the_cli_are_exit_2_without_traceback(tmp_path):
    raw = yaml.safe_load(DEMO.read_text())
    for i, (label, overrides, field) in enumerate(mutations(n=6, seed=1)):
        cfg = apply_overrides(copy.deepcopy(raw), overrides) if label != "unknown" else raw
        path = write_config(tmp_path / f"c{i}.yaml", cfg)
        proc = megameta(
            "train", "--config", str(path), "--phase", "meta", *(overrides if label == "unknown" else [])
        )
        assert proc.returncode == 2, (label, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr
        assert field in proc.stderr.strip().splitlines()[-1]


def _train_cfg(tmp_path, template: dict, **kw) -> TrainConfig:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(template))
    return from_dict(TrainConfig, {"deepspeed_config": str(path), **kw}, "train")


def test_unknown_zero_stage_names_the_template(tmp_path):
    cfg = _train_cfg(tmp_path, {"zero_optimization": {"stage": 7}})
    with pytest.raises(ConfigError, match=r"ds.json: zero_optimization.stage must be 0-3, got 7"):
        render_ds_config(cfg, world_size=2, grad_clip=1.0, fp16_supported=False)
    with pytest.raises(ConfigError, match=r"train.zero_stage: must be 0, 1, 2 or 3, got 5"):
        from_dict(TrainConfig, {"zero_stage": 5}, "train")


def test_fp16_where_unsupported_is_refused(tmp_path):
    cfg = _train_cfg(tmp_path, {"zero_optimization": {"stage": 1}}, precision="fp16")
    with pytest.raises(ConfigError, match="train.precision: fp16 is not supported by this accelerator"):
        render_ds_config(cfg, world_size=2, grad_clip=1.0, fp16_supported=False)


def test_offload_without_the_cpu_adam_op_is_refused(tmp_path, monkeypatch):
    from deepspeed.ops.op_builder import CPUAdamBuilder

    monkeypatch.setattr(CPUAdamBuilder, "is_compatible", lambda self, verbose=False: False)
    cfg = _train_cfg(tmp_path, {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
    with pytest.raises(
        ConfigError, match=r"offloads the optimizer to the CPU, which needs DeepSpeed's 'cpu_adam' op"
    ):
        render_ds_config(cfg, world_size=1, grad_clip=1.0, fp16_supported=False)


def test_template_values_that_contradict_the_run_config_are_named(tmp_path):
    cfg = _train_cfg(
        tmp_path, {"train_micro_batch_size_per_gpu": 8, "bf16": {"enabled": True}}, micro_batch_size=4
    )
    with pytest.raises(ConfigError) as e:
        render_ds_config(cfg, world_size=2, grad_clip=1.0, fp16_supported=False)
    assert "train_micro_batch_size_per_gpu=8 in" in str(e.value) and "train.micro_batch_size gives 4" in str(
        e.value
    )
    assert "bf16.enabled=true in" in str(e.value) and "train.precision is fp32" in str(e.value)


def test_invalid_json_template_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "zero_optimization": {"stage": 1,}\n}\n')
    cfg = from_dict(TrainConfig, {"deepspeed_config": str(path)}, "train")
    with pytest.raises(ConfigError, match=r"broken.json:2:\d+: invalid JSON"):
        render_ds_config(cfg, world_size=1, grad_clip=1.0, fp16_supported=False)
