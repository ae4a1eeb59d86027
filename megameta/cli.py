"""``megameta`` command line: one subcommand per verb, each parse -> build -> run -> close.

Exit codes: 0 success, 2 bad input or config (the message names the field,
file or line), 3 stopped on a preemption signal after checkpointing (requeue),
1 any other failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from megameta.errors import EXIT_BAD_INPUT, EXIT_FAILURE, InputError, MegaMetaError


def _config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="run config YAML (see configs/)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. train.micro_batch_size=8 phases[1].alpha=0.5",
    )


def _load(args):
    from megameta.config import load_config

    return load_config(args.config, args.overrides)


def cmd_fetch_demo_corpus(args) -> int:
    from megameta.data.demo import fetch_demo_corpus

    fetch_demo_corpus(args.out, force=args.force)
    return 0


def cmd_tokenizer(args) -> int:
    from megameta.pipeline import ensure_corpus, ensure_tokenizer

    cfg = _load(args)
    if args.force and cfg.tokenizer_dir.exists():
        import shutil

        shutil.rmtree(cfg.tokenizer_dir)
    ensure_corpus(cfg)
    ensure_tokenizer(cfg)
    return 0


def cmd_preprocess(args) -> int:
    from megameta.errors import ConfigError
    from megameta.pipeline import ensure_shards

    if args.workers is not None:  # through the config, so it is validated like data.workers
        args.overrides = [*args.overrides, f"data.workers={args.workers}"]
    cfg = _load(args)
    if args.num_shards < 1 or not 0 <= args.shard_index < args.num_shards:
        raise ConfigError(
            f"--shard-index {args.shard_index} --num-shards {args.num_shards}: need 0 <= index < num-shards"
        )
    ensure_shards(cfg, (args.shard_index, args.num_shards))
    return 0


def cmd_train(args) -> int:
    from megameta.train.dist import exit_process
    from megameta.train.entry import train_phase

    cfg = _load(args)
    phase = args.phase
    if phase is None:
        if len(cfg.phases) != 1:
            from megameta.errors import ConfigError

            names = ", ".join(p.name for p in cfg.phases + cfg.baseline) or "none"
            raise ConfigError(f"--phase is required when the config has several phases ({names})")
        phase = cfg.phases[0].name
    code = train_phase(cfg, phase)
    # The phase has closed everything it wrote (checkpoint, DONE.json, train log, TensorBoard), torn
    # down its process group and finalized MPI (which mpirun checks): end without finalization.
    exit_process(code)


def cmd_convert(args) -> int:
    from megameta.convert import convert, from_hf
    from megameta.errors import InputError

    t = time.time()
    if args.from_hf:
        # `convert --from-hf HF_DIR OUT`: the one positional given is the output dir.
        out = args.out or args.checkpoint
        if not out or (args.out and args.checkpoint):
            raise InputError("convert --from-hf HF_DIR OUT: give exactly one output dir")
        cfg = _load(args) if args.config else None
        info = from_hf(args.from_hf, out, run_config=cfg)
        print(
            f"converted {args.from_hf} -> {info['checkpoint']} in {time.time() - t:.1f}s; "
            f"start a phase from it with phases[i].init_from={out}"
        )
        return 0
    if not args.checkpoint or not args.out:
        raise InputError("convert CKPT_DIR OUT_DIR: both paths are required")
    info = convert(
        args.checkpoint,
        args.out,
        tag=args.tag,
        dtype=args.dtype,
        verify=not args.no_verify,
        shard_size=args.shard_size,
    )
    verified = (
        f", verified (max |logit diff| {info['verify_max_abs_diff']:.1e})"
        if "verify_max_abs_diff" in info
        else ""
    )
    print(
        f"converted {info['tag']} (phase {info['phase']}, step {info['step']}) -> {args.out}{verified} in {time.time() - t:.1f}s"
    )
    return 0


def cmd_evaluate(args) -> int:
    from megameta.evaluate.report import run_evaluation

    cfg = _load(args)
    out = args.out or os.path.join(args.model, "eval")
    run_evaluation(args.model, cfg.corpus.dir, cfg.evaluate, out)
    print(f"report: {os.path.join(out, 'report.md')}")
    return 0


def cmd_pipeline(args) -> int:
    from megameta.pipeline import run_pipeline

    return run_pipeline(_load(args), with_baseline=args.with_baseline, seeds=args.seeds)


def cmd_plan(args) -> int:
    from megameta.plan import run_plan

    text, error = run_plan(
        _load(args),
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        gpu=args.gpu,
        gpu_memory=args.gpu_memory,
        mfu=args.mfu,
        as_json=args.json,
    )
    print(text, flush=True)
    if error:  # the table first, so the user sees by how much it does not fit
        print(f"megameta plan: error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    return 0


def cmd_inspect(args) -> int:
    from megameta.inspect import inspect_path

    print(inspect_path(args.path, env=args.env, alpha=args.alpha))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megameta", description="Cross-lingual LM meta-pretraining with DeepSpeed."
    )
    # The deepspeed launcher passes --local_rank before the verb; LOCAL_RANK in the environment is what we use.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser(
        "fetch-demo-corpus", help="build the embedded real corpus (Wikipedia leads en/fr/es, UDHR)"
    )
    p.add_argument("--out", default="cache/demo_corpus")
    p.add_argument("--force", action="store_true", help="rebuild even if complete")
    p.set_defaults(fn=cmd_fetch_demo_corpus)

    p = sub.add_parser("tokenizer", help="train the shared SentencePiece vocabulary -> HF tokenizer dir")
    _config_args(p)
    p.add_argument("--force", action="store_true", help="retrain even if the tokenizer exists")
    p.set_defaults(fn=cmd_tokenizer)

    p = sub.add_parser("preprocess", help="raw text -> memory-mapped token shards + manifest.json")
    _config_args(p)
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (sets data.workers)")
    p.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="split every (language, split) into this many pieces (one per SLURM array task); "
        "a later run without it merges them",
    )
    p.add_argument(
        "--shard-index", type=int, default=0, help="which piece this run tokenizes (0 .. num-shards-1)"
    )
    p.set_defaults(fn=cmd_preprocess)

    p = sub.add_parser("train", help="train one phase (run under deepspeed, torchrun, mpirun or srun)")
    _config_args(p)
    p.add_argument("--phase", help="phase name (required when the config has several)")
    p.add_argument(
        "--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS
    )  # set by the deepspeed launcher
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "convert",
        help="checkpoint -> Hugging Face model dir (verified); --from-hf: HF dir -> checkpoint for init_from",
    )
    p.add_argument("checkpoint", nargs="?", help="phase dir, checkpoints dir or one checkpoint dir")
    p.add_argument("out", nargs="?", help="output HF model dir (with --from-hf: output checkpoint dir)")
    p.add_argument("--tag", help="checkpoint tag (default: newest valid)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--no-verify", action="store_true", help="skip the logits check against transformers")
    p.add_argument(
        "--shard-size",
        default="2GB",
        help="split model.safetensors into shards of at most this size (e.g. 2GB, 500MiB)",
    )
    p.add_argument(
        "--from-hf",
        metavar="HF_DIR",
        help="reverse direction: an XLM-R HF dir -> a checkpoint that phases[i].init_from can start from",
    )
    p.add_argument(
        "--config", help="with --from-hf: run config whose model and tokenizer the HF dir must fit"
    )
    p.set_defaults(fn=cmd_convert, overrides=[])

    p = sub.add_parser("evaluate", help="evaluation suite -> report.json, report.md, plots")
    p.add_argument("--model", required=True, help="HF model dir (from `megameta convert`)")
    p.add_argument("--out", help="report dir (default: MODEL/eval)")
    _config_args(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser(
        "pipeline", help="the whole recipe: corpus, tokenizer, shards, phases, convert, evaluate"
    )
    _config_args(p)
    p.add_argument(
        "--with-baseline", action="store_true", help="also train and evaluate the single-phase baseline"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="with --with-baseline: train and evaluate both arms for this many seeds and compare them "
        "paired by seed (finished seeds are reused; a larger N grows an experiment)",
    )
    p.set_defaults(fn=cmd_pipeline)

    p = sub.add_parser(
        "plan", help="will a cluster run fit, how long, what it writes, is the data there (no GPU needed)"
    )
    _config_args(p)
    p.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs per machine (default: launch.nproc)")
    p.add_argument(
        "--gpu", default="h100-sxm", help="GPU model: a100-40gb, a100-80gb, h100-sxm, h100-pcie, h200, ..."
    )
    p.add_argument("--gpu-memory", help="memory per GPU, e.g. 80GB (default: the GPU model's)")
    p.add_argument("--mfu", type=float, default=0.45, help="model FLOPs utilization to plan wall time with")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (for scripts)")
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("inspect", help="summary of a shard dir, a checkpoint dir or the environment")
    p.add_argument("path", nargs="?", help="shard dir or phase/checkpoint dir")
    p.add_argument(
        "--env",
        action="store_true",
        help="report active kernels (attention, LayerNorm, optimizer, precision)",
    )
    p.add_argument("--alpha", type=float, default=0.3, help="sampling exponent for shard probabilities")
    p.set_defaults(fn=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except MegaMetaError as e:
        if e.__cause__ is not None and not isinstance(e, InputError):
            # A runtime failure reported for the user (a collective that failed): keep what caused it.
            traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"megameta {args.verb}: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"megameta {args.verb}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"megameta {args.verb}: out of memory", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["EXIT_BAD_INPUT", "main"]
