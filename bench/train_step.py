"""Training-step throughput: MegaMeta's XLMRForMaskedLM vs transformers' XLMRobertaForMaskedLM.

Both models run full steps (forward, backward, AdamW step) through the same single-process
DeepSpeed engine config (ZeRO-0, the torch AdamW the trainer builds with ``kernels.build_adamw``,
so no DeepSpeed op is compiled) on the same batch: random token ids, 15% of positions labelled.
The Hugging Face baseline gets its faster attention implementation ("sdpa" or "eager", timed per
precision on the first vocabulary).

    python bench/train_step.py                      # vocab 32000 and 250002, fp32 and bf16
    python bench/train_step.py --vocab 250002 --precision fp32 --steps 5 --compile

Prints one row per (vocab, precision, model) and, last, the ours/hf tokens/s ratio of the
headline setting (the largest vocabulary, fp32 when run).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from megameta.train.dist import free_port  # noqa: E402


def _single_process_env() -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def _ds_config(batch: int, precision: str) -> dict:
    return {
        "train_micro_batch_size_per_gpu": batch,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 0},
        "bf16": {"enabled": precision == "bf16"},
        "gradient_clipping": 1.0,
        "steps_per_print": 10**9,
    }


def _batch(vocab: int, batch: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    masked = torch.rand(batch, seq, generator=g) < 0.15
    masked[:, 0] = masked[:, -1] = False
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return ids, labels


def make_step(
    model: torch.nn.Module, batch: int, precision: str
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Wrap ``model`` in a DeepSpeed engine; return a function running one full training step."""
    import deepspeed

    from megameta.kernels import build_adamw

    opt = build_adamw(model.parameters(), lr=1e-4, weight_decay=0.01)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=_ds_config(batch, precision))

    def step(ids: torch.Tensor, labels: torch.Tensor) -> None:
        loss = engine(input_ids=ids.to(engine.device), labels=labels.to(engine.device)).loss
        engine.backward(loss)
        engine.step()

    return step


def time_interleaved(
    steps: dict[str, Callable], ids: torch.Tensor, labels: torch.Tensor, n: int, warmup: int
) -> dict[str, float]:
    """Tokens/s per variant from the median step time, running the variants round-robin.

    Round-robin plus median keeps the comparison fair on a shared, noisy machine: a burst of
    load hits every variant alike, and the median ignores it.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + n):
        for name, step in steps.items():
            start = time.perf_counter()
            step(ids, labels)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: ids.numel() / statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, choices=(32000, 250002), action="append", help="default: both")
    p.add_argument("--precision", choices=("fp32", "bf16"), action="append", help="default: both")
    p.add_argument("--compile", action="store_true", help="also time our model with per-layer torch.compile")
    p.add_argument("--steps", type=int, default=4, help="timed steps per model (median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocabs, precisions = sorted(args.vocab or (32000, 250002)), args.precision or ["fp32", "bf16"]

    _single_process_env()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    from transformers import XLMRobertaForMaskedLM

    from megameta.model import ModelConfig, XLMRForMaskedLM, to_hf_config

    print(
        f"threads={torch.get_num_threads()} shape: {args.layers}L h{args.hidden} {args.heads}heads "
        f"ffn{args.ffn}, batch {args.batch}x{args.seq}, ZeRO-0, {args.warmup} warmup + {args.steps} timed steps, round-robin, median"
    )
    rows, ratios = [], {}
    for precision in precisions:
        hf_attn = None  # chosen on the first vocabulary of each precision, then reused
        for vocab in vocabs:
            cfg = ModelConfig(
                preset="custom",
                vocab_size=vocab,
                num_layers=args.layers,
                hidden_size=args.hidden,
                num_heads=args.heads,
                intermediate_size=args.ffn,
            )
            ids, labels = _batch(vocab, args.batch, args.seq)
            torch.manual_seed(0)
            state = XLMRForMaskedLM(cfg).state_dict()

            def build_hf(attn: str, state=state, cfg=cfg) -> torch.nn.Module:
                hf_cfg = to_hf_config(cfg)
                hf_cfg._attn_implementation = attn
                hf = XLMRobertaForMaskedLM(hf_cfg)
                hf.load_state_dict(state)
                return hf.train()

            steps = {
                f"hf[{attn}]": make_step(build_hf(attn), args.batch, precision)
                for attn in ((hf_attn,) if hf_attn else ("sdpa", "eager"))
            }
            variants = [("ours", False)] + ([("ours+compile", True)] if args.compile else [])
            for name, compiled in variants:
                cfg.compile = compiled
                ours = XLMRForMaskedLM(cfg)
                ours.load_state_dict(state)
                steps[name] = make_step(ours.train(), args.batch, precision)
                del ours
            tps = time_interleaved(steps, ids, labels, args.steps, args.warmup)
            print(
                f"vocab={vocab} {precision}: " + ", ".join(f"{k} {v:.0f} tok/s" for k, v in tps.items()),
                flush=True,
            )
            hf_name = max((k for k in tps if k.startswith("hf")), key=tps.get)
            hf_attn = hf_name[3:-1]
            for name, value in tps.items():
                ratio = None if name.startswith("hf") else value / tps[hf_name]
                label = name + ("*" if name == hf_name else "")
                rows.append((vocab, precision, label, value, ratio))
                if ratio is not None:
                    ratios[(vocab, precision, name)] = ratio
            del steps
            gc.collect()

    print(f"\n{'vocab':>7}  {'prec':<5} {'model':<16} {'tokens/s':>10}  ours/hf")
    for vocab, precision, name, tps, ratio in rows:
        print(
            f"{vocab:>7}  {precision:<5} {name:<16} {tps:>10.0f}  {'' if ratio is None else f'{ratio:.2f}x'}"
        )
    print("(* = baseline attention implementation used for the ratio)")
    for (vocab, precision, name), ratio in ratios.items():
        print(f"ratio {name}/hf tokens/s: vocab={vocab} {precision}: {ratio:.2f}x")
    head = (max(vocabs), "fp32" if "fp32" in precisions else precisions[0], "ours")
    print(f"ratio ours/hf tokens/s: vocab={head[0]} {head[1]}: {ratios[head]:.2f}x")


if __name__ == "__main__":
    main()
