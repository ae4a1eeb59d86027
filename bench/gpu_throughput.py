"""XLM-R-base training throughput on one GPU: MegaMeta's model vs transformers', tokens/s and MFU.

Both models train with bf16 under the same DeepSpeed config (ZeRO-1 unless --zero-stage) and a fused
``torch.optim.AdamW``, on the same random batch (15% of positions masked); the Hugging Face
baseline uses ``attn_implementation="sdpa"``. Default shape: 12 layers, hidden 768, 12 heads,
FFN 3072, vocabulary 250002, sequence 512.

Model FLOPs per token come from ``megameta.model.flops_per_token`` and are the same for both
models (the useful work of a masked-LM step):
``6 * L * (4 H^2 + 2 H F) + 12 * L * H * T + 6 * 0.15 * (H^2 + H V)``.
MFU = achieved model TFLOP/s / peak dense bf16 TFLOP/s of the GPU (``megameta.hardware`` by device
name, or ``--peak-tflops``).

Without a CUDA GPU it prints "bench/gpu_throughput.py needs a CUDA GPU; none found" and exits
with code 0, so CI scripts that call it on CPU machines do not fail.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from megameta.hardware import peak_tflops_for  # noqa: E402
from megameta.train.dist import free_port  # noqa: E402


def _peak(name: str, override: float | None) -> float | None:
    if override:
        return override
    return peak_tflops_for(name, "bf16")


def _train(
    model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int, stage: int
) -> float:
    """Seconds per training step (forward, backward, optimizer) under DeepSpeed ZeRO-``stage`` bf16."""
    import deepspeed

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    config = {
        "train_micro_batch_size_per_gpu": ids.shape[0],
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": True},
        "gradient_clipping": 1.0,
        "steps_per_print": 10**9,
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        loss = engine(input_ids=ids, labels=labels).loss
        engine.backward(loss)
        engine.step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    engine.destroy()
    del engine, opt, model
    gc.collect()
    torch.cuda.empty_cache()
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=250002)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="compile our layers (regional torch.compile)")
    p.add_argument(
        "--zero-stage",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="DeepSpeed ZeRO stage for both models (default 1); the optimizer step's cost differs by stage",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's peak bf16 TFLOP/s")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_throughput.py needs a CUDA GPU; none found")
        return 0

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    from transformers import XLMRobertaForMaskedLM

    from megameta.model import ModelConfig, XLMRForMaskedLM, flops_per_token, to_hf_config

    cfg = ModelConfig(
        preset="custom",
        vocab_size=args.vocab,
        num_layers=args.layers,
        hidden_size=args.hidden,
        num_heads=args.heads,
        intermediate_size=args.ffn,
        max_position_embeddings=max(514, args.seq + 2),
        compile=args.compile,
    )
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    ids, labels = ids.cuda(), labels.cuda()

    name = torch.cuda.get_device_name()
    peak = _peak(name, args.peak_tflops)
    fpt = flops_per_token(cfg, args.seq)
    torch.manual_seed(0)
    state = XLMRForMaskedLM(cfg).state_dict()

    def build_ours() -> torch.nn.Module:
        model = XLMRForMaskedLM(cfg)
        model.load_state_dict(state)
        return model

    def build_hf() -> torch.nn.Module:
        hf_cfg = to_hf_config(cfg)
        hf_cfg._attn_implementation = "sdpa"
        model = XLMRobertaForMaskedLM(hf_cfg)
        model.load_state_dict(state)
        return model

    # Each model is built in the call, so that it is freed before the next one is built.
    results = {
        key: _train(build(), ids, labels, args.steps, args.warmup, args.zero_stage)
        for key, build in (("ours", build_ours), ("hf[sdpa]", build_hf))
    }

    print(
        f"{name}; {args.layers}L h{args.hidden} ffn{args.ffn} vocab {args.vocab}, batch {args.batch}x{args.seq}, "
        f"bf16, ZeRO-{args.zero_stage}, {args.steps} steps after {args.warmup} warmup"
    )
    print(
        f"model FLOPs/token = {fpt / 1e9:.3f} GFLOP; peak = {peak or 'unknown (use --peak-tflops)'} TFLOP/s"
    )
    print(f"{'model':<10} {'s/step':>8} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6}")
    tps = {}
    for key, seconds in results.items():
        tps[key] = ids.numel() / seconds
        tflops = tps[key] * fpt / 1e12
        mfu = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
        print(f"{key:<10} {seconds:>8.3f} {tps[key]:>10.0f} {tflops:>8.1f} {mfu:>6}")
    print(
        f"ratio ours/hf tokens/s: XLM-R vocab={args.vocab} bf16 seq={args.seq} ZeRO-{args.zero_stage}: "
        f"{tps['ours'] / tps['hf[sdpa]']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
