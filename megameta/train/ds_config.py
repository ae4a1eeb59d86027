"""Render the final DeepSpeed config from a reviewed template and the run config.

Templates in ``ds_configs/`` leave batch sizes, clipping and precision as
``"auto"`` (or absent); this is the one place where the batch arithmetic
``train_batch_size = micro_batch * grad_accum * world_size`` is checked. A
template value that disagrees with the run config stops the run with a message
naming both values.
"""

from __future__ import annotations

import json
from pathlib import Path

from megameta.config import TrainConfig
from megameta.errors import ConfigError


def load_template(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"train.deepspeed_config: file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"train.deepspeed_config: {path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})"
        ) from None


def _set(ds: dict, key: str, value, source: str, template: str, conflicts: list[str]) -> None:
    current = ds.get(key, "auto")
    if current != "auto" and current != value:
        conflicts.append(f"{key}={current} in {template} but {source} gives {value}")
    ds[key] = value


def render_ds_config(
    train: TrainConfig,
    world_size: int,
    grad_clip: float,
    fp16_supported: bool,
    bf16_supported: bool = True,
    check_ops: bool = True,
) -> dict:
    """The DeepSpeed config dict this run uses. Raises ConfigError on conflicts.

    ``check_ops=False`` skips the build check of the offload op (``megameta plan`` renders the
    config on a login node, not where the op is built).
    """
    ds = load_template(train.deepspeed_config)
    template = train.deepspeed_config
    conflicts: list[str] = []
    global_batch = train.micro_batch_size * train.grad_accum * world_size
    if train.global_batch_size and train.global_batch_size != global_batch:
        raise ConfigError(
            f"train.global_batch_size: {train.global_batch_size} != micro_batch_size ({train.micro_batch_size}) "
            f"* grad_accum ({train.grad_accum}) * world size ({world_size}) = {global_batch}"
        )
    _set(
        ds,
        "train_micro_batch_size_per_gpu",
        train.micro_batch_size,
        "train.micro_batch_size",
        template,
        conflicts,
    )
    _set(ds, "gradient_accumulation_steps", train.grad_accum, "train.grad_accum", template, conflicts)
    _set(
        ds,
        "train_batch_size",
        global_batch,
        "micro_batch_size * grad_accum * world size",
        template,
        conflicts,
    )
    _set(ds, "gradient_clipping", grad_clip, "optim.grad_clip", template, conflicts)

    zero = ds.setdefault("zero_optimization", {"stage": 0})
    if train.zero_stage is not None:
        zero["stage"] = train.zero_stage
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(
            f"train.deepspeed_config: {template}: zero_optimization.stage must be 0-3, got {stage}"
        )

    want = train.precision
    for name in ("bf16", "fp16"):
        enabled = (
            bool(ds.get(name, {}).get("enabled", False))
            if ds.get(name, {}).get("enabled") != "auto"
            else None
        )
        if enabled is True and want != name:
            conflicts.append(f"{name}.enabled=true in {template} but train.precision is {want}")
    if want == "fp16" and not fp16_supported:
        raise ConfigError("train.precision: fp16 is not supported by this accelerator (use bf16 or fp32)")
    if want == "bf16" and not bf16_supported:
        raise ConfigError("train.precision: bf16 is not supported by this accelerator (use fp16 or fp32)")
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": want == "bf16"}
    ds["fp16"] = {
        **{
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        **ds.get("fp16", {}),
        "enabled": want == "fp16",
    }
    if want == "bf16" and stage >= 1:
        # bf16 gradient accumulation diverges under ZeRO on long runs: accumulate and keep master weights in
        # fp32. (ZeRO-0 keeps fp32 master weights but DeepSpeed 0.19 cannot accumulate its grads in fp32.)
        ds.setdefault("data_types", {}).setdefault("grad_accum_dtype", "fp32")
    if conflicts:
        raise ConfigError("DeepSpeed config conflicts with the run config: " + "; ".join(conflicts))
    if check_ops and uses_offload(ds):
        check_offload_op(template)
    return ds


def check_offload_op(template: str) -> None:
    """ZeRO-Offload steps the optimizer on the CPU with DeepSpeed's cpu_adam op, which must be buildable here."""
    from deepspeed.ops.op_builder import CPUAdamBuilder

    builder = CPUAdamBuilder()
    if not builder.is_compatible(verbose=False):
        raise ConfigError(
            f"train.deepspeed_config: {template} offloads the optimizer to the CPU, which needs DeepSpeed's "
            f"'{builder.name}' op, and it cannot be built on this machine (a C++ compiler and the Python headers "
            f"are needed); use a template without offload_optimizer/offload_param"
        )


def uses_offload(ds: dict) -> bool:
    zero = ds.get("zero_optimization", {})
    return bool(zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)) or bool(
        zero.get("offload_param", {}).get("device", "none") not in ("none", None)
    )
