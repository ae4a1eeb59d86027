"""Time all ranks spend blocked per checkpoint save: checksums by every rank (now) vs by rank 0 (before).

A >= 100M-parameter XLM-R-shaped model on 2 CPU ranks (torchrun, gloo), ZeRO-1 fp32 with a
``torch.optim.AdamW`` (no DeepSpeed op is compiled), one training step so the optimizer state
exists, then ``--saves`` saves per mode through the trainer's own :class:`Checkpointer`:

* before: rank 0 hashes every file of the checkpoint, one at a time, while the other ranks wait
  (``rank_checksums=False, hash_workers=1``: the code path before per-rank checksums);
* now: each rank hashes the files it wrote, in threads, and rank 0 merges the records.

Each rank times its ``Checkpointer.save`` calls (the step is blocked for all of it); the line per
mode is the sum over ranks, averaged over saves, and the last line the ratio now/before.

    python bench/checkpoint_stall.py                 # 2 ranks, 2 saves per mode
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def _worker(out_dir: Path, saves: int) -> None:
    import deepspeed
    import torch
    import torch.distributed as dist

    from megameta.checkpoint import CheckpointMeta
    from megameta.layout import RunLayout
    from megameta.model import ModelConfig, XLMRForMaskedLM
    from megameta.train.checkpointer import Checkpointer
    from megameta.train.dist import init_distributed

    rank, _, world = init_distributed(600)
    torch.manual_seed(0)
    cfg = ModelConfig(preset="custom", vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12,
                      intermediate_size=3072, hidden_dropout=0.0, attention_dropout=0.0)  # fmt: skip
    model = XLMRForMaskedLM(cfg)
    n_params = model.num_parameters()
    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "steps_per_print": 10**9,
          "zero_optimization": {"stage": 1}}  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=ds)
    ids = torch.randint(3, 32000, (1, 16))
    labels = torch.where(torch.rand(1, 16) < 0.3, ids, torch.full_like(ids, -100))
    labels[0, 1] = ids[0, 1]
    engine.backward(engine(ids, labels=labels).loss)
    engine.step()
    layout = RunLayout.of(out_dir).phase("meta")
    checkpointer = Checkpointer(layout, rank, world, lambda msg: None)
    results = {}
    step = 0
    for mode, per_rank, workers in (
        ("before (rank 0 hashes all)", False, 1),
        ("now (each rank, threads)", True, 4),
    ):
        checkpointer.rank_checksums, checkpointer.hash_workers = per_rank, workers
        blocked = []
        for _ in range(saves):
            step += 1
            meta = CheckpointMeta(step=step, samples_seen=step, tokens_seen=step, phase="meta", world_size=world,
                                  model={"vocab_size": 32000}, zero_stage=1, precision="fp32", langs=["en"],
                                  lang_samples=[step], lang_tokens=[step])  # fmt: skip
            state = {"step": step, "world_size": world}
            dist.barrier()
            start = time.perf_counter()
            checkpointer.save(engine, step, state, meta, keep_last=1, keep_every=0, fault=lambda *a: None)
            mine = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
            dist.all_reduce(mine)
            blocked.append(float(mine))
        results[mode] = sum(blocked) / len(blocked)
    if rank == 0:
        size = sum(p.stat().st_size for p in layout.checkpoints.rglob("*") if p.is_file())
        print(
            f"model {n_params / 1e6:.0f}M parameters, {world} ranks, ZeRO-1 fp32, checkpoint {size / 1e9:.2f} GB"
        )
        for mode, seconds in results.items():
            print(f"{mode:<28} {seconds:7.2f} s blocked per save, summed over ranks")
        before, now = results.values()
        print(f"ratio now/before (rank-seconds blocked per save): {now / before:.2f}x")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--saves", type=int, default=2)
    ap.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(Path(args.worker), args.saves)
        return
    from megameta.train.dist import free_port

    with tempfile.TemporaryDirectory(prefix="megameta-stall-") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks),
               "--master_port", str(free_port()), __file__, "--worker", tmp, "--saves", str(args.saves)]  # fmt: skip
        sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
