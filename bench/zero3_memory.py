"""Peak memory per rank of a ZeRO-3 training step: MegaMeta's XLMRForMaskedLM vs transformers'
XLMRobertaForMaskedLM, 2 CPU ranks, 250k vocabulary, the same DeepSpeed config.

Each model runs in its own ``torchrun`` job (so each starts from a fresh process), is wrapped in a
ZeRO-3 engine with a ``torch.optim.AdamW`` and trained for a few steps on the same random batch (15%
of positions masked). Ours is built through the trainer's ``build_model`` (under ``zero.Init``);
transformers' is built whole and partitioned by ``deepspeed.initialize``, so only the steps are
compared: the peak RSS is reset once the engine exists. A rank's figure is its peak RSS during the
steps minus its RSS just before the model was built: its share of the weights, gradients and
optimizer state plus the step's activations, without the interpreter and libraries. glibc is told
to return freed memory to the OS at once (``MALLOC_MMAP_THRESHOLD_``), so RSS is what a process holds.

    python bench/zero3_memory.py                 # 4 x 256 model, vocab 250002, batch 16 x 128
    python bench/zero3_memory.py --batch 32 --seq 256

The last line is the ratio ours/hf of the larger rank's peak (target <= 0.7x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=250002)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16, help="micro-batch per rank")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--worker", choices=("ours", "hf"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak() -> int:
    """Peak RSS (VmHWM) in bytes since the last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(args: argparse.Namespace) -> None:
    import deepspeed
    import psutil
    import torch

    from megameta.model import ModelConfig, to_hf_config
    from megameta.train.build import build_model
    from megameta.train.dist import exit_process

    deepspeed.init_distributed("gloo")
    rank = int(os.environ["RANK"])
    cfg = ModelConfig(preset="custom", vocab_size=args.vocab, num_layers=args.layers, hidden_size=args.hidden,
                      num_heads=args.heads, intermediate_size=args.ffn)  # fmt: skip
    ds = {"train_micro_batch_size_per_gpu": args.batch, "gradient_accumulation_steps": 1,
          "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
          "gradient_clipping": 1.0, "steps_per_print": 10**9}  # fmt: skip
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    torch.manual_seed(0)
    before = psutil.Process().memory_info().rss
    if args.worker == "ours":
        model = build_model(cfg, ds)
    else:
        from transformers import XLMRobertaForMaskedLM

        hf_cfg = to_hf_config(cfg.resolved())
        hf_cfg._attn_implementation = "sdpa"
        model = XLMRobertaForMaskedLM(hf_cfg)  # partitioned by deepspeed.initialize below
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds)
    _reset_peak()  # the steps' peak, not the construction's (transformers' is not under zero.Init)
    for _ in range(args.steps):
        loss = engine(input_ids=ids, labels=labels).loss
        engine.backward(loss)
        engine.step()
    peak = _peak()
    print(
        json.dumps({"rank": rank, "model": args.worker, "growth": peak - before, "loss": float(loss)}),
        flush=True,
    )
    torch.distributed.destroy_process_group()
    exit_process(0)


def run(model: str, argv: list[str]) -> list[int]:
    from megameta.train.dist import free_port

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           __file__, *argv, "--worker", model]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{model} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    lines = proc.stdout.replace("}{", "}\n{").splitlines()
    rows = sorted((json.loads(x) for x in lines if x.startswith('{"rank"')), key=lambda r: r["rank"])
    return [r["growth"] for r in rows]


def main() -> None:
    argv = sys.argv[1:]
    args = _args(argv)
    if args.worker:
        worker(args)
        return
    print(f"ZeRO-3, 2 CPU ranks: {args.layers}L h{args.hidden} ffn{args.ffn} vocab {args.vocab}, "
          f"micro-batch {args.batch}x{args.seq}, {args.steps} steps; peak RSS growth per rank")  # fmt: skip
    peaks = {}
    for model in ("ours", "hf"):
        growth = run(model, argv)
        peaks[model] = max(growth)
        print(
            f"{model:<5} " + "  ".join(f"rank {i}: {g / 2**20:,.0f} MiB" for i, g in enumerate(growth)),
            flush=True,
        )
    print(
        f"ratio ours/hf peak memory per rank (ZeRO-3, vocab {args.vocab}): {peaks['ours'] / peaks['hf']:.2f}x"
    )


if __name__ == "__main__":
    main()
