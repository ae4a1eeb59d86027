"""Checkpoint conversion: MegaMeta's streaming converter vs DeepSpeed's ``zero_to_fp32``.

Both read the same 2-rank ZeRO-3 checkpoint of an XLM-R-base-sized model (``--vocab 32000``:
~110M parameters, created once in ``runs/bench_convert/`` by one real optimizer step under two
gloo ranks, and reused). Each converter runs in a fresh subprocess of this interpreter that
imports what the converter needs, converts, and reports its own peak RSS (``ru_maxrss``, whole
process: interpreter + imports + conversion) and the seconds spent in the conversion call.

- ours: ``megameta.convert.convert(..., verify=False)`` -> ``model.safetensors`` + config + tokenizer
- zero_to_fp32: ``convert_zero_checkpoint_to_fp32_state_dict`` -> ``pytorch_model.bin`` (its
  safetensors path refuses the tied embeddings, see DESIGN.md section 6)

    python bench/convert.py                 # create the checkpoint if missing, then measure
    python bench/convert.py --repeats 3     # best-of-3 time, max RSS

The last line is ``ratio ours/zero_to_fp32: peak RSS <r>x, time <t>x`` (targets: <= 0.6, <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
from megameta.train.dist import free_port  # noqa: E402

RUN = REPO / "runs" / "bench_convert"
PHASE = "meta"


def _rank(rank: int, world: int, port: int, vocab: int) -> None:
    """One training rank: ZeRO-3, torch AdamW, one optimizer step, then our checkpoint layout."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import deepspeed
    import torch
    import torch.distributed as dist

    from megameta import checkpoint as ckpt
    from megameta.config import dump_config
    from megameta.model import ModelConfig, XLMRForMaskedLM
    from megameta.train.optim import param_groups

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    cfg = ModelConfig(preset="base", vocab_size=vocab, hidden_dropout=0.0, attention_dropout=0.0)
    model = XLMRForMaskedLM(cfg)
    ds = json.loads((REPO / "ds_configs" / "zero3.json").read_text())
    ds.update(train_batch_size=world, train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1)
    ds["gradient_clipping"] = 1.0
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds)
    gen = torch.Generator().manual_seed(rank)
    ids = torch.randint(4, vocab, (1, 32), generator=gen)
    labels = torch.full_like(ids, -100)
    labels[:, ::7] = ids[:, ::7]
    engine.backward(engine(ids, labels=labels).loss)
    engine.step()
    root, tag = RUN / PHASE / "checkpoints", ckpt.tag_for(1)
    stage = ckpt.staging_dir(root, tag)
    if rank == 0:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
    dist.barrier()
    state = {"step": 1, "samples_seen": world, "tokens_seen": 32 * world, "phase": PHASE, "world_size": world}
    engine.save_checkpoint(str(stage), tag=tag, client_state={"megameta": state}, save_latest=False)
    dist.barrier()
    if rank == 0:
        meta = ckpt.CheckpointMeta(**state, model=dump_config(cfg), config={"bench": "convert"}, zero_stage=3,
                                   precision="fp32")  # fmt: skip
        ckpt.finalize(root, tag, meta)
    dist.barrier()


def ensure_checkpoint(vocab: int) -> Path:
    from megameta import checkpoint as ckpt

    root = RUN / PHASE / "checkpoints"
    tag = ckpt.newest_intact(root, full=False) if root.is_dir() else None
    if tag is not None:
        return root / tag
    # A tokenizer dir is required next to the checkpoint; its vocabulary is irrelevant without verification.
    tok = RUN / PHASE / "tokenizer"
    if not tok.exists():
        from megameta.data.tokenizer import load_tokenizer  # noqa: F401  (only to fail early if missing)

        src = next((p for p in (REPO / "runs").glob("*/tokenizer") if (p / "tokenizer.json").exists()), None)
        tok.mkdir(parents=True)
        if src is not None:
            for f in src.iterdir():
                shutil.copy(f, tok / f.name)
        else:
            (tok / "tokenizer.json").write_text("{}")
    print(f"creating a 2-rank ZeRO-3 checkpoint in {root} (one training step) ...", flush=True)
    import torch.multiprocessing as mp

    t = time.time()
    mp.start_processes(_rank, args=(2, free_port(), vocab), nprocs=2, start_method="spawn")
    print(f"  done in {time.time() - t:.0f}s", flush=True)
    return root / ckpt.newest_intact(root, full=False)


OURS = """
import json, resource, sys, time
from megameta.convert import convert
t = time.perf_counter()
convert(sys.argv[1], sys.argv[2], verify=False)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
THEIRS = """
import json, resource, sys, time
from pathlib import Path
from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_fp32_state_dict
ckpt = Path(sys.argv[1])
t = time.perf_counter()
convert_zero_checkpoint_to_fp32_state_dict(str(ckpt.parent), sys.argv[2], tag=ckpt.name)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
BASELINE = """
import json, resource
import deepspeed, torch, megameta.convert  # what both converters import
print(json.dumps({"seconds": 0.0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(code: str, ckpt_dir: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ckpt_dir), str(out)], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"converter failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument(
        "--repeats", type=int, default=1, help="runs per converter (alternating); best time, max RSS"
    )
    args = ap.parse_args()
    ckpt_dir = ensure_checkpoint(args.vocab)
    from megameta.checkpoint import CheckpointMeta
    from megameta.model import ModelConfig, meta_model

    meta = CheckpointMeta.read(ckpt_dir)
    n = meta_model(ModelConfig(**meta.model)).num_parameters()
    size = sum(f.stat().st_size for f in ckpt_dir.iterdir())
    print(f"checkpoint {ckpt_dir}: ZeRO-{meta.zero_stage}, {meta.world_size} ranks, {n / 1e6:.1f}M parameters "
          f"(fp32 {n * 4 / 2**20:.0f} MiB), {size / 2**20:.0f} MiB on disk")  # fmt: skip
    out = RUN / "out"
    base = measure(BASELINE, ckpt_dir, out / "base")
    runs: dict[str, list[dict]] = {"ours": [], "zero_to_fp32": []}
    for _ in range(args.repeats):
        runs["zero_to_fp32"].append(measure(THEIRS, ckpt_dir, out / "zero_to_fp32"))
        runs["ours"].append(measure(OURS, ckpt_dir, out / "ours"))
    print(f"{'interpreter + imports':>22}: peak RSS {base['peak_rss_mb']:7.0f} MiB")
    best = {}
    for name, rs in runs.items():
        best[name] = {"rss": max(r["peak_rss_mb"] for r in rs), "s": min(r["seconds"] for r in rs),
                      "proc": min(r["process_seconds"] for r in rs)}  # fmt: skip
        b = best[name]
        print(f"{name:>22}: peak RSS {b['rss']:7.0f} MiB ({b['rss'] - base['peak_rss_mb']:6.0f} above imports), "
              f"convert {b['s']:6.2f}s, whole process {b['proc']:6.2f}s")  # fmt: skip
    o, z = best["ours"], best["zero_to_fp32"]
    print(f"ratio ours/zero_to_fp32: peak RSS {o['rss'] / z['rss']:.2f}x, time {o['s'] / z['s']:.2f}x")


if __name__ == "__main__":
    main()
