"""XLM-R-base training throughput on one GPU: MegaMeta's model vs transformers', tokens/s and MFU.

Three rows, bf16, ZeRO-1 unless ``--zero-stage``. Default shape: 12 layers, hidden 768, 12 heads,
FFN 3072, vocabulary 250002, sequence 512, micro-batch 16.

* ``ours[trainer]``: ``megameta train`` itself (under torchrun, one process) on random words of a
  synthetic 250,002-id tokenizer: the real data pipeline, prefetch, step and logging; tokens/s is
  the median of what the trainer logged to TensorBoard (``train/tokens_per_s``), first window excluded.
* ``ours[loop]`` and ``hf[sdpa]``: our model and transformers' ``XLMRobertaForMaskedLM``
  (``attn_implementation="sdpa"``) in a plain DeepSpeed loop under the DeepSpeed config the trainer
  rendered, with a fused ``torch.optim.AdamW``, on one random batch (15% of positions masked).

The last line is the ratio ours[trainer] / hf[sdpa].

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
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from megameta.hardware import peak_tflops_for  # noqa: E402
from megameta.train.dist import free_port  # noqa: E402


def _peak(name: str, override: float | None) -> float | None:
    if override:
        return override
    return peak_tflops_for(name, "bf16")


def _train(
    model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int, config: dict
) -> float:
    """Seconds per training step (forward, backward, optimizer) under DeepSpeed ``config``."""
    import deepspeed

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
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


def synthetic_tokenizer(out: Path, pieces: int) -> None:
    """A SentencePiece unigram model whose pieces are the words ``w0``, ``w1``, ... (plus <unk>, <s>,
    </s>), saved as the HF tokenizer dir the trainer reads: XLM-R's vocabulary size without training
    a 250k vocabulary."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from transformers import XLMRobertaTokenizer

    from megameta.data.tokenizer import SPM_FILE

    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    m.trainer_spec.vocab_size = pieces
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = m.normalizer_spec.escape_whitespaces = True
    kinds = pb.ModelProto.SentencePiece
    for piece, kind in (("<unk>", kinds.UNKNOWN), ("<s>", kinds.CONTROL), ("</s>", kinds.CONTROL)):
        m.pieces.add(piece=piece, score=0.0, type=kind)
    for i in range(pieces - 3):
        m.pieces.add(piece=f"\u2581w{i}", score=-1.0)
    out.mkdir(parents=True)
    (out / SPM_FILE).write_bytes(m.SerializeToString())
    XLMRobertaTokenizer.from_pretrained(str(out)).save_pretrained(str(out))
    (out / "megameta_tokenizer.json").write_text(json.dumps({"synthetic": True, "spm_pieces": pieces}))


def _run_config(args: argparse.Namespace, root: Path) -> dict:
    """The run config the trainer row trains (one phase, English only), as a dict."""
    log_every = max(1, args.steps // 4)
    return {
        "run_dir": str(root / "run"),
        "corpus": {"dir": str(root / "corpus"), "demo": False},
        "data": {"sources": {"en": ["en.jsonl"]}, "max_seq_len": args.seq, "workers": 4},
        "model": {"preset": "custom", "num_layers": args.layers, "hidden_size": args.hidden, "num_heads": args.heads,
                  "intermediate_size": args.ffn, "max_position_embeddings": max(514, args.seq + 2),
                  "compile": args.compile},
        "train": {"micro_batch_size": args.batch, "precision": "bf16", "log_every": log_every,
                  "save_every": 10**6, "deepspeed_config": f"ds_configs/zero{args.zero_stage}.json"},
        "phases": [{"name": "meta", "langs": ["en"], "steps": log_every * (1 + -(-args.steps // log_every))}],
        "launch": {"launcher": "torchrun", "nproc": 1},
    }  # fmt: skip


def trainer_ds_config(args: argparse.Namespace) -> dict:
    """The DeepSpeed config ``megameta train`` renders for this shape on one GPU (fp32 gradient
    accumulation in bf16, the trainer's bucket sizes), for the plain loops."""
    from megameta.config import RunConfig
    from megameta.configtools import from_dict
    from megameta.train.ds_config import render_ds_config

    cfg = from_dict(RunConfig, _run_config(args, Path(tempfile.gettempdir())))
    return render_ds_config(cfg.train, 1, cfg.optim.grad_clip, True, True, check_ops=False)


def through_trainer(args: argparse.Namespace, root: Path) -> tuple[float, float | None]:
    """Train the shape with ``megameta train`` (one process under torchrun, bf16, ZeRO-``--zero-stage``)
    on random words of a synthetic ``--vocab``-id tokenizer: the real data pipeline, prefetch, step and
    logging. Returns the median ``train/tokens_per_s`` and ``system/mfu`` the trainer logged to
    TensorBoard over the windows after the first."""
    import random

    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from megameta.config import RunConfig
    from megameta.configtools import from_dict

    synthetic_tokenizer(root / "run" / "tokenizer", args.vocab - 2)  # + <pad>, <mask> in XLM-R's layout
    rng = random.Random(0)
    (root / "corpus").mkdir()
    with open(root / "corpus" / "en.jsonl", "w") as f:  # 200-word documents, enough for every step
        for _ in range(args.batch * (args.steps + 2 * max(1, args.steps // 4)) * args.seq // 200 + 100):
            f.write(
                json.dumps({"text": " ".join(f"w{rng.randrange(args.vocab - 5)}" for _ in range(200))}) + "\n"
            )
    cfg = _run_config(args, root)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
    }
    for cmd in (
        [sys.executable, "-m", "megameta.cli", "preprocess", "--config", str(path)],
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port()),
         "-m", "megameta.cli", "train", "--config", str(path), "--phase", "meta"],
    ):  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    events = EventAccumulator(str(from_dict(RunConfig, cfg).layout.phase("meta").tensorboard))
    events.Reload()

    def median(tag: str) -> float | None:
        if tag not in events.Tags()["scalars"]:
            return None
        values = [e.value for e in events.Scalars(tag)][1:]  # the first window holds the warm-up
        return statistics.median(values) if values else None

    return median("train/tokens_per_s"), median("system/mfu")


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
    p.add_argument("--skip-trainer", action="store_true", help="only the plain loops (no ours[trainer] row)")
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

    trainer_tps = trainer_mfu = None
    if not args.skip_trainer:
        with tempfile.TemporaryDirectory(prefix="gpu_throughput-") as tmp:
            trainer_tps, trainer_mfu = through_trainer(args, Path(tmp))
    # The trainer's DeepSpeed config, for both models in plain loops. Each model is built in the
    # call, so that it is freed before the next one is built.
    ds_config = trainer_ds_config(args)
    results = {
        key: _train(build(), ids, labels, args.steps, args.warmup, ds_config)
        for key, build in (("ours[loop]", build_ours), ("hf[sdpa]", build_hf))
    }

    print(
        f"{name}; {args.layers}L h{args.hidden} ffn{args.ffn} vocab {args.vocab}, batch {args.batch}x{args.seq}, "
        f"bf16, ZeRO-{args.zero_stage}, {args.steps} steps after {args.warmup} warmup"
    )
    print(
        f"model FLOPs/token = {fpt / 1e9:.3f} GFLOP; peak = {peak or 'unknown (use --peak-tflops)'} TFLOP/s"
    )
    print(f"{'model':<13} {'s/step':>8} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6}")
    tps = {key: ids.numel() / seconds for key, seconds in results.items()}
    if trainer_tps is not None:
        tps = {"ours[trainer]": trainer_tps, **tps}
    for key, value in tps.items():
        tflops = value * fpt / 1e12
        mfu = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
        print(f"{key:<13} {ids.numel() / value:>8.3f} {value:>10.0f} {tflops:>8.1f} {mfu:>6}")
    if trainer_mfu is not None:
        print(f"(the trainer's own system/mfu in TensorBoard: {100 * trainer_mfu:.1f}%)")
    ours = "ours[trainer]" if "ours[trainer]" in tps else "ours[loop]"
    print(
        f"ratio {ours}/hf tokens/s: XLM-R vocab={args.vocab} bf16 seq={args.seq} ZeRO-{args.zero_stage}: "
        f"{tps[ours] / tps['hf[sdpa]']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
