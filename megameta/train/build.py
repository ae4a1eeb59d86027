"""What a phase is built from: its data streams, its model (with the phase hand-off) and its engine."""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from megameta.config import ResolvedPhase, RunConfig, dump_config
from megameta.data.loader import MLMStream
from megameta.data.sampler import alpha_schedule
from megameta.data.tokenizer import Vocab, vocab_hash
from megameta.errors import InputError
from megameta.layout import PhaseLayout
from megameta.model.config import ModelConfig
from megameta.train.ds_config import uses_offload
from megameta.train.optim import build_optimizer, param_groups
from megameta.train.schedule import lr_lambda

# DeepSpeed's ZeRO-1/2 call this deprecated torch API once per rank; the warning is not the user's to act on.
warnings.filterwarnings(
    "ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated", category=FutureWarning
)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (weights init, dropout)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def build_streams(
    cfg: RunConfig, phase: ResolvedPhase, vocab: Vocab, total_samples: int
) -> tuple[MLMStream, MLMStream | None]:
    """The phase's training stream and its validation stream (None when no language has valid text)."""
    data = cfg.data
    alpha_at = alpha_schedule(phase.alpha, phase.alpha_end, total_samples)
    # Held-out text is masked as training text is (whole words or not), so their losses compare.
    common = dict(tokenizer_dir=cfg.tokenizer_dir, tokenizer=vocab, seq_len=data.max_seq_len,
                  mask_prob=data.mask_prob, alpha_at=alpha_at, whole_word_mask=data.whole_word_mask)  # fmt: skip
    stream = MLMStream(cfg.shard_dir, phase.langs, seed=data.seed, **common)
    valid_langs = [lang for lang in phase.langs if lang in data.valid_sources]
    if not valid_langs:
        return stream, None
    return stream, MLMStream(cfg.shard_dir, valid_langs, seed=data.seed + 1, split="valid", **common)


def data_stream(cfg: RunConfig, phase: ResolvedPhase) -> dict:
    """What fixes the sample stream, by config field: a checkpoint records it, and a resume that
    changes any of it is refused (see ``checkpointer.check_data_stream``)."""
    data, where = cfg.data, cfg.phase_path(phase.name)
    return {
        "data.seed": data.seed,
        "data.max_seq_len": data.max_seq_len,
        "data.mask_prob": data.mask_prob,
        "data.whole_word_mask": data.whole_word_mask,
        f"{where}.alpha": phase.alpha,
        f"{where}.alpha_end": phase.alpha_end,
        f"{where}.langs": list(phase.langs),
        "tokenizer (vocabulary sha256)": vocab_hash(cfg.tokenizer_dir),
    }


def model_config(cfg: RunConfig, vocab_size: int) -> ModelConfig:
    """``cfg.model`` resolved against the tokenizer's ``vocab_size`` and the sequence length (the
    trainer's and ``megameta plan``'s model). Raises InputError naming the field to change."""
    mc = cfg.model.resolved()
    if mc.vocab_size == 0:
        mc.vocab_size = vocab_size
    elif mc.vocab_size != vocab_size:
        raise InputError(
            f"model.vocab_size is {mc.vocab_size} but the tokenizer at {cfg.tokenizer_dir} has {vocab_size} ids"
        )
    if cfg.data.max_seq_len > mc.max_seq_len:
        need = mc.max_position_embeddings - mc.max_seq_len + cfg.data.max_seq_len
        raise InputError(
            f"data.max_seq_len {cfg.data.max_seq_len} needs model.max_position_embeddings >= {need}"
        )
    mc.validate("model")
    return mc


def build_model(model_cfg: ModelConfig, ds_config: dict) -> torch.nn.Module:
    """The phase's model. Under ZeRO-3 it is built inside ``deepspeed.zero.Init``: each module's
    parameters are partitioned across the ranks as soon as the module exists, so no rank ever holds
    the whole model (``tests/train/test_zero_init.py`` measures each rank's peak). The initial
    weights are the same as an unpartitioned build's: DeepSpeed runs the weight init (``apply``) on
    each module's gathered parameters, drawing the same random numbers in the same order."""
    from megameta.model import XLMRForMaskedLM

    if ds_config.get("zero_optimization", {}).get("stage", 0) != 3:
        return XLMRForMaskedLM(model_cfg)
    import deepspeed

    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        return XLMRForMaskedLM(model_cfg)


def build_engine(
    cfg: RunConfig,
    phase: ResolvedPhase,
    model: torch.nn.Module,
    ds_config: dict,
    device: torch.device,
    total_steps: int,
):
    """``deepspeed.initialize`` with our parameter groups, optimizer and lr schedule: (engine, scheduler)."""
    import deepspeed
    from deepspeed.checkpoint import constants as ds_ckpt

    # Lets ds_to_universal re-shard our checkpoints when a run resumes on another world size.
    info = {ds_ckpt.UNIVERSAL_CHECKPOINT_VERSION_KEY: ds_ckpt.UNIVERSAL_CHECKPOINT_VERSION_VALUE}
    setattr(model, ds_ckpt.UNIVERSAL_CHECKPOINT_INFO, info)
    optim = cfg.optim
    groups = param_groups(model, optim.weight_decay)
    optimizer = build_optimizer(groups, optim, phase, ds_config, device)
    schedule = lr_lambda(optim.schedule, phase.warmup_steps, total_steps, optim.min_lr_ratio)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=groups if optimizer is None else None,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=ds_config,
    )
    return engine, scheduler


def write_run_files(layout: PhaseLayout, cfg: RunConfig, ds_config: dict) -> None:
    """The phase dir's record of what ran (rank 0): config, rendered DeepSpeed config, and the run's
    tokenizer next to the checkpoints (what ``convert`` ships with the model)."""
    import json
    import shutil

    import yaml

    layout.dir.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
    layout.ds_config.write_text(json.dumps(ds_config, indent=2))
    if not layout.tokenizer.exists():
        shutil.copytree(cfg.tokenizer_dir, layout.tokenizer)


def set_matmul_precision(train, device: torch.device) -> None:
    """TF32 matmuls on Ampere or newer GPUs when ``train.precision`` is fp32 and ``train.tf32`` is on
    (about 8x the fp32 matmul throughput, 10-bit mantissa inputs, fp32 accumulation); off otherwise."""
    if device.type != "cuda":
        return
    on = train.precision == "fp32" and train.tf32 and torch.cuda.get_device_capability(device)[0] >= 8
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def phase_banner(cfg: RunConfig, phase: ResolvedPhase, total_steps: int, global_batch: int, world: int,
                 ds_config: dict, device: torch.device) -> str:  # fmt: skip
    """The start-up lines of a phase: its shape, and the kernels this process uses (the report of
    ``megameta inspect --env``: attention, optimizer, dropout, mixed precision, compile)."""
    from megameta.kernels import detect_kernels, format_kernel_report

    report = detect_kernels(device, None if uses_offload(ds_config) else cfg.optim.kernel)
    stage = ds_config["zero_optimization"].get("stage", 0)
    tf32 = " (TF32 matmuls)" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else ""
    return (
        f"[train] phase {phase.name}: langs {','.join(phase.langs)} | {total_steps} steps x {global_batch} seqs x "
        f"{cfg.data.max_seq_len} tokens | world {world} | ZeRO {stage} | {cfg.train.precision}{tf32} | device {device.type}\n"
        + format_kernel_report(report)
    )
