"""render_ds_config: the one place where batch arithmetic, precision and the ZeRO stage are settled."""

from __future__ import annotations

import json

import pytest

from megameta.config import TrainConfig
from megameta.errors import ConfigError
from megameta.train.ds_config import render_ds_config, uses_offload


def _train(**kw) -> TrainConfig:
    return TrainConfig(
        **{"micro_batch_size": 4, "grad_accum": 2, "deepspeed_config": "ds_configs/zero1.json", **kw}
    )


def test_batch_sizes_clipping_and_precision_are_filled_in():
    ds = render_ds_config(_train(precision="bf16"), world_size=3, grad_clip=0.5, fp16_supported=False)
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 24
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert ds["data_types"]["grad_accum_dtype"] == "fp32"  # ZeRO >= 1 with bf16 accumulates in fp32


def test_zero_stage_override_and_fp32():
    ds = render_ds_config(_train(zero_stage=3), world_size=2, grad_clip=1.0, fp16_supported=False)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False
    assert "data_types" not in ds


def test_global_batch_that_disagrees_with_the_world_size_names_the_field():
    with pytest.raises(
        ConfigError,
        match=r"train.global_batch_size: 32 != micro_batch_size \(4\) \* grad_accum \(2\) \* world size \(2\) = 16",
    ):
        render_ds_config(_train(global_batch_size=32), world_size=2, grad_clip=1.0, fp16_supported=True)


def test_template_values_that_conflict_are_named(tmp_path):
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 1}}))
    with pytest.raises(
        ConfigError, match=r"train_micro_batch_size_per_gpu=8 in .*t.json but train.micro_batch_size gives 4"
    ):
        render_ds_config(
            _train(deepspeed_config=str(template)), world_size=1, grad_clip=1.0, fp16_supported=True
        )


def test_unsupported_precision_is_refused():
    with pytest.raises(ConfigError, match="train.precision: fp16 is not supported by this accelerator"):
        render_ds_config(_train(precision="fp16"), world_size=1, grad_clip=1.0, fp16_supported=False)
    ds = render_ds_config(_train(precision="fp16"), world_size=1, grad_clip=1.0, fp16_supported=True)
    assert ds["fp16"]["enabled"] is True and ds["fp16"]["loss_scale"] == 0  # dynamic loss scaling


@pytest.mark.parametrize(("template", "offload"), [("zero2.json", False), ("zero3_offload.json", True)])
def test_offload_is_detected_from_the_template(template, offload):
    from megameta.train.ds_config import load_template

    assert uses_offload(load_template(f"ds_configs/{template}")) is offload


@pytest.mark.parametrize("template", ["zero1.json", "zero2_offload.json"])
def test_phase_banner_names_the_optimizer_that_steps(template):
    """The start-up kernel report names the AdamW kernel built (``optim.kernel``), or DeepSpeed's CPU
    Adam when ZeRO-Offload steps the optimizer instead."""
    import torch

    from megameta.config import load_config
    from megameta.train.build import phase_banner

    cfg = load_config("configs/demo/pipeline.yaml", ["optim.kernel=torch-foreach"])
    ds = render_ds_config(
        _train(deepspeed_config=f"ds_configs/{template}"), 2, 1.0, fp16_supported=False, check_ops=False
    )
    banner = phase_banner(cfg, cfg.resolve_phase("meta"), 10, 16, 2, ds, torch.device("cpu"))
    optimizer_row = next(line for line in banner.splitlines() if line.startswith("optimizer "))
    if uses_offload(ds):
        assert "deepspeed.ops.adam.DeepSpeedCPUAdam" in optimizer_row and "ZeRO-Offload" in optimizer_row
    else:
        assert (
            "torch.optim.AdamW(foreach=True)" in optimizer_row
            and "optim.kernel: torch-foreach" in optimizer_row
        )
