"""``megameta plan``: will this run fit, how long will it take, what will it write, is the data there.

Everything is computed from the config on any machine in seconds: the model is built on the
meta device (shapes, no memory), the DeepSpeed config is rendered by the trainer's own
``render_ds_config`` (so the batch arithmetic and its errors are the trainer's), steps per phase
come from ``RunConfig.resolve_phase`` (what the trainer runs), FLOPs per token from the model's
``flops_per_token``. Memory is estimated by :mod:`megameta.plan.memory`.

The result is one JSON-able dict (``--json``); :func:`check_fit` raises ConfigError naming the
field to change when the run cannot fit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass

from megameta.config import RunConfig
from megameta.errors import ConfigError
from megameta.hardware import GpuSpec
from megameta.plan import data as data_check
from megameta.plan import memory as mem


@dataclass(frozen=True)
class Cluster:
    """The machines the run is planned for."""

    nodes: int
    gpus_per_node: int
    gpu: GpuSpec
    memory_gib: float
    mfu: float

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


@contextlib.contextmanager
def _quiet_deepspeed():
    """DeepSpeed logs its accelerator choice to stdout when first imported: keep ``--json`` clean.

    Its logger's handler keeps the stream it was created with, so point it back at stdout after.
    """
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    for handler in logging.getLogger("DeepSpeed").handlers:
        if getattr(handler, "stream", None) is buf:
            handler.setStream(sys.stdout)


def model_config(cfg: RunConfig):
    """The model the trainer will build: its vocabulary from the tokenizer when it exists, else from
    ``tokenizer.vocab_size`` (SentencePiece pieces + the id offset + ``<mask>``, as Vocab lays them out)."""
    from megameta.data.tokenizer import SPM_FILE, Vocab
    from megameta.train.build import model_config as trainer_model_config

    if (cfg.tokenizer_dir / SPM_FILE).exists():
        vocab_size = len(Vocab(cfg.tokenizer_dir))
    else:
        vocab_size = cfg.model.vocab_size or cfg.tokenizer.vocab_size + Vocab.OFFSET + 1
    return trainer_model_config(cfg, vocab_size)


def count_params(mc) -> tuple[int, int]:
    """(trainable parameters, tied weights counted once; parameters of the largest single module)."""
    from megameta.model import meta_model

    with _quiet_deepspeed():  # the model registers ZeRO-3 hooks through deepspeed when it is installed
        model = meta_model(mc)
    seen: dict[int, int] = {}
    for p in model.parameters():  # parameters() yields a tied tensor once
        seen[id(p)] = p.numel()
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return sum(seen.values()), largest


def deepspeed_estimate(n_params: int, largest: int, z: mem.ZeroSetup, cluster: Cluster) -> int | None:
    """DeepSpeed's own per-GPU model-state estimate for ZeRO-2/3 (None for other stages or without it)."""
    if z.stage < 2 or z.precision == "fp32":
        return None
    try:
        with _quiet_deepspeed():
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except ImportError:
        return None
    kw = dict(num_gpus_per_node=cluster.gpus_per_node, num_nodes=cluster.nodes)
    if z.stage == 2:
        return estimate_zero2_model_states_mem_needs(n_params, cpu_offload=z.offload_optimizer, **kw)[1]
    return estimate_zero3_model_states_mem_needs(
        n_params, largest, cpu_offload=z.offload_optimizer, cpu_offload_params=z.offload_param, **kw
    )[1]


def _render(cfg: RunConfig, cluster: Cluster) -> dict:
    from megameta.train.ds_config import render_ds_config

    try:
        return render_ds_config(
            cfg.train,
            cluster.world,
            cfg.optim.grad_clip,
            fp16_supported=True,
            bf16_supported=cluster.gpu.bf16,
            check_ops=False,  # the offload op is built on the GPU nodes, not where we plan
        )
    except ConfigError as e:
        if str(e).startswith("train.global_batch_size"):
            per_rank = cfg.train.micro_batch_size * cfg.train.grad_accum
            world = cfg.train.global_batch_size / per_rank
            hint = (
                f" (plan for a world of {world:g} with --nodes/--gpus-per-node, or change train.grad_accum)"
                if world == int(world)
                else ""
            )
            raise ConfigError(f"{e}{hint}") from None
        raise


def make_plan(cfg: RunConfig, cluster: Cluster) -> dict:
    """The whole plan as a JSON-able dict. Raises ConfigError for batch settings that disagree."""
    from megameta.model import flops_per_token

    ds = _render(cfg, cluster)
    global_batch = ds["train_batch_size"]
    mc = model_config(cfg)
    n_params, largest = count_params(mc)
    z = mem.ZeroSetup.from_ds_config(ds, cfg.train.precision)
    seq = cfg.data.max_seq_len
    shape = mem.Shape(
        mc.num_layers,
        mc.hidden_size,
        mc.intermediate_size,
        mc.num_heads,
        mc.vocab_size,
        seq,
        cfg.data.mask_prob,
        mc.loss_chunk_size,
        2 if cfg.train.precision == "bf16" else 4,
    )
    states = mem.model_states(n_params, largest, z, cluster.world)
    fixed = states["total"] + mem.buffers(z)
    budget = mem.usable_bytes(cluster.memory_gib)
    micro = cfg.train.micro_batch_size
    act = {ck: mem.activations(shape, micro, z.elem, ck) for ck in (False, True)}
    ckpt = mc.activation_checkpointing
    fpt = flops_per_token(mc, seq, cfg.data.mask_prob)
    peak = cluster.gpu.peak_tflops(cfg.train.precision)
    ckpt_bytes = mem.checkpoint_bytes(n_params, z, cluster.world)
    # Seconds of compute per optimizer step at the stated MFU; phase hours follow from it.
    step_seconds = fpt * global_batch * seq / (cluster.world * peak * 1e12 * cluster.mfu)
    phases = []
    for phase in cfg.phases + cfg.baseline:
        steps = cfg.resolve_phase(phase.name).total_steps(global_batch)
        tokens = steps * global_batch * seq
        peak_kept, final_kept = mem.kept_checkpoints(
            steps, cfg.train.save_every, cfg.train.keep_last, cfg.train.keep_every
        )
        phases.append(
            {
                "name": phase.name,
                "baseline": phase in cfg.baseline,
                "langs": list(phase.langs),
                "alpha": phase.alpha if phase.alpha is not None else cfg.data.alpha,
                "steps": steps,
                "tokens": tokens,
                "hours": steps * step_seconds / 3600,
                "checkpoints_kept": final_kept,
                "checkpoints_peak": peak_kept,
                "disk_bytes": peak_kept * ckpt_bytes["total"],
            }
        )
    main = [p for p in phases if not p["baseline"]]
    return {
        "run_dir": str(cfg.run_dir),
        "cluster": {
            "nodes": cluster.nodes,
            "gpus_per_node": cluster.gpus_per_node,
            "world": cluster.world,
            "gpu": cluster.gpu.name,
            "gpu_memory_gib": cluster.memory_gib,
            "peak_tflops": peak,
            "mfu": cluster.mfu,
        },
        "model": {
            "layers": mc.num_layers,
            "hidden": mc.hidden_size,
            "ffn": mc.intermediate_size,
            "heads": mc.num_heads,
            "vocab": mc.vocab_size,
            "params": n_params,
            "largest_layer_params": largest,
            "flops_per_token": fpt,
        },
        "batch": {
            "micro_batch": micro,
            "grad_accum": cfg.train.grad_accum,
            "global_batch": global_batch,
            "seq_len": seq,
            "tokens_per_step": global_batch * seq,
            "step_seconds": step_seconds,
            "precision": cfg.train.precision,
            "zero_stage": z.stage,
            "offload_optimizer": z.offload_optimizer,
            "offload_param": z.offload_param,
            "activation_checkpointing": ckpt,
        },
        "memory": {
            "model_states": states,
            "deepspeed_estimate": deepspeed_estimate(n_params, largest, z, cluster),
            "buffers": mem.buffers(z),
            "activations": act[ckpt],
            "activations_without_checkpointing": act[False]["total"],
            "activations_with_checkpointing": act[True]["total"],
            "total": fixed + act[ckpt]["total"],
            "usable": budget,
            "max_micro_batch": mem.max_micro_batch(fixed, shape, z.elem, ckpt, budget),
            "max_micro_batch_without_checkpointing": mem.max_micro_batch(fixed, shape, z.elem, False, budget),
            "max_micro_batch_with_checkpointing": mem.max_micro_batch(fixed, shape, z.elem, True, budget),
        },
        "checkpoint": ckpt_bytes,
        "phases": phases,
        "totals": {
            "steps": sum(p["steps"] for p in main),
            "tokens": sum(p["tokens"] for p in main),
            "hours": sum(p["hours"] for p in main),
            "disk_bytes": sum(ckpt_bytes["total"] * p["checkpoints_kept"] for p in main)
            + max((p["disk_bytes"] - ckpt_bytes["total"] * p["checkpoints_kept"] for p in main), default=0),
        },
        "data": data_check.readiness(cfg, phases),
    }


def check_fit(plan: dict) -> None:
    """Raise ConfigError naming the field to change when the planned run does not fit in GPU memory."""
    m, b = plan["memory"], plan["batch"]
    gib = mem.GIB
    usable = m["usable"] / gib
    fixed = (m["model_states"]["total"] + m["buffers"]) / gib
    if m["max_micro_batch"] == 0 and m["max_micro_batch_with_checkpointing"] == 0:
        raise ConfigError(
            f"train.deepspeed_config: model states need {fixed:.1f} GiB per GPU with ZeRO-{b['zero_stage']} "
            f"on {plan['cluster']['world']} GPUs, more than the {usable:.1f} GiB usable of "
            f"{plan['cluster']['gpu_memory_gib']:g} GiB; use a higher ZeRO stage (ds_configs/zero3.json), "
            f"offload (ds_configs/zero3_offload.json) or more GPUs"
        )
    if b["micro_batch"] > m["max_micro_batch"]:
        need = m["total"] / gib
        alt = m["max_micro_batch_with_checkpointing"]
        hint = (
            f"; with model.activation_checkpointing=true up to {alt} fits"
            if not b["activation_checkpointing"] and alt > m["max_micro_batch"]
            else ""
        )
        raise ConfigError(
            f"train.micro_batch_size: {b['micro_batch']} sequences of {b['seq_len']} tokens need {need:.1f} GiB "
            f"per GPU ({fixed:.1f} model states and buffers + {m['activations']['total'] / gib:.1f} activations), "
            f"more than the {usable:.1f} GiB usable; the largest micro-batch that fits is {m['max_micro_batch']}"
            f"{hint} (raise train.grad_accum to keep the global batch)"
        )
