"""The whole recipe as resumable steps: corpus, tokenizer, shards, phases, convert, evaluate.

Each step checks its own completion marker and is skipped on rerun, so a
pipeline killed anywhere continues where it stopped (a training phase resumes
from its newest checkpoint). Training phases run in child processes started by
the configured launcher, exactly as a user would start them by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from megameta.config import PhaseConfig, RunConfig, dump_config
from megameta.configtools import from_dict
from megameta.errors import EXIT_BAD_INPUT, EXIT_REQUEUE, InputError, MegaMetaError
from megameta.launch import launch_command
from megameta.layout import PhaseLayout
from megameta.train.dist import free_port


def say(msg: str) -> None:
    print(f"[pipeline] {msg}", flush=True)


def ensure_corpus(cfg: RunConfig) -> None:
    corpus = Path(cfg.corpus.dir)
    if not cfg.corpus.demo:
        if not corpus.exists():
            raise InputError(f"corpus.dir: {corpus} does not exist")
        return
    from megameta.data.demo import fetch_demo_corpus, is_built

    if not is_built(corpus):  # missing, interrupted, or built by a version with another layout
        say(f"building the demo corpus in {corpus}")
        fetch_demo_corpus(corpus)


def resolved_sources(cfg: RunConfig) -> dict[str, dict[str, list[str]]]:
    """split -> lang -> absolute-or-cwd-relative files (``hf:`` sources pass through)."""
    out: dict[str, dict[str, list[str]]] = {}
    for split, by_lang in (("train", cfg.data.sources), ("valid", cfg.data.valid_sources)):
        if by_lang:
            out[split] = {
                lang: [f if f.startswith("hf:") else str(cfg.source_path(f)) for f in files]
                for lang, files in by_lang.items()
            }
    return out


def ensure_tokenizer(cfg: RunConfig) -> None:
    from megameta.data.tokenizer import train_tokenizer

    if (cfg.tokenizer_dir / "megameta_tokenizer.json").exists():
        say(f"tokenizer: {cfg.tokenizer_dir} exists, skipped")
        return
    t = time.time()
    t_cfg = cfg.tokenizer
    summary = train_tokenizer(
        resolved_sources(cfg)["train"],
        cfg.tokenizer_dir,
        vocab_size=t_cfg.vocab_size,
        model_type=t_cfg.model_type,
        alpha=t_cfg.alpha,
        max_sentences=t_cfg.max_sentences,
        character_coverage=t_cfg.character_coverage,
        text_field=cfg.data.text_field,
        seed=t_cfg.seed,
        fmt=cfg.data.format,
    )
    say(
        f"tokenizer: {summary['vocab_size']} ids ({t_cfg.model_type}) -> {cfg.tokenizer_dir} in {time.time() - t:.0f}s"
    )


def ensure_shards(cfg: RunConfig, piece: tuple[int, int] = (0, 1)) -> dict:
    """Preprocess ``cfg``'s sources; ``piece=(i, n)`` does only piece i of n (see megameta.data.preprocess)."""
    from megameta.data.preprocess import preprocess, summary_table

    t = time.time()
    manifest = preprocess(
        resolved_sources(cfg),
        cfg.tokenizer_dir,
        cfg.shard_dir,
        cfg.data.text_field,
        cfg.data.workers,
        progress=sys.stderr.isatty(),
        fmt=cfg.data.format,
        dedup=cfg.data.dedup,
        piece=piece,
    )
    if piece[1] > 1:
        say(
            f"shards: piece {piece[0]} of {piece[1]} in {time.time() - t:.0f}s; merge with a plain `preprocess`"
        )
        return manifest
    print(summary_table(manifest), flush=True)
    say(f"shards: {cfg.shard_dir} in {time.time() - t:.0f}s")
    return manifest


def run_phase(cfg: RunConfig, config_path: Path, phase: PhaseConfig) -> None:
    layout = cfg.layout.phase(phase.name)
    if layout.done.exists():
        say(f"phase {phase.name}: complete, skipped")
        return
    init = cfg.resolve_phase(phase.name).init_from
    if init is not None and init.phase is not None and not cfg.layout.phase(init.phase).done.exists():
        raise InputError(
            f"phase {phase.name}: init_from phase '{init.phase}' has not finished "
            f"({cfg.layout.phase(init.phase).done} missing)"
        )
    cmd = launch_command(cfg.launch.launcher, cfg.launch.nproc, config_path, phase.name, free_port())
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(cfg.launch.omp_threads))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    say(f"phase {phase.name}: {' '.join(cmd)}")
    layout.dir.mkdir(parents=True, exist_ok=True)
    code = subprocess.call(cmd, env=env)
    if code == EXIT_REQUEUE:
        raise _Requeue(f"phase {phase.name} stopped on a signal after checkpointing; rerun to resume")
    if code != 0 or not layout.done.exists():
        raise MegaMetaError(
            f"phase {phase.name} failed (exit code {code}); see the log above. Rerun to resume from its last checkpoint."
        )


class _Requeue(MegaMetaError):
    exit_code = EXIT_REQUEUE


def hf_up_to_date(phase: PhaseLayout) -> bool:
    """The phase's HF dir holds the checkpoint its DONE.json names (False when either is missing).

    The one freshness test for conversion: the pipeline and ``slurm/convert_evaluate.sbatch`` (through
    ``tools/slurm_env.py converted``) both skip a conversion that this says is done.
    """
    from megameta.convert import PROVENANCE  # the converter's record of its source checkpoint

    try:
        done = json.loads(phase.done.read_text())
        provenance = json.loads((phase.hf / PROVENANCE).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(done, dict) and isinstance(provenance, dict) and provenance.get("tag") == done.get("tag")
    )


def ensure_converted(cfg: RunConfig, phase: PhaseConfig) -> Path:
    from megameta.convert import convert

    layout = cfg.layout.phase(phase.name)
    out = layout.hf
    if hf_up_to_date(layout):
        say(f"convert {phase.name}: {out} up to date, skipped")
        return out
    info = convert(layout.dir, out, tag=json.loads(layout.done.read_text())["tag"])
    say(
        f"convert {phase.name}: {out} (verified, max |logit diff| {info.get('verify_max_abs_diff', float('nan')):.1e})"
    )
    return out


def ensure_evaluated(cfg: RunConfig, phase: PhaseConfig, model_dir: Path) -> dict:
    from megameta.evaluate.report import run_evaluation

    out = cfg.layout.phase(phase.name).eval
    report_path = cfg.layout.phase(phase.name).report
    if report_path.exists():
        say(f"evaluate {phase.name}: {report_path} exists, skipped")
        return json.loads(report_path.read_text())
    return run_evaluation(str(model_dir), cfg.corpus.dir, cfg.evaluate, str(out))


def seed_config(cfg: RunConfig, k: int) -> RunConfig:
    """Seed ``k`` of an experiment. Seed 0 is ``cfg``; seed k >= 1 runs in ``<run_dir>/seeds/seed<k>`` with
    ``train.seed`` and ``data.seed`` offset by k, so weight init, dropout, data order and masking change
    while the vocabulary, the shards and the evaluation (its own seeds) stay shared."""
    if k == 0:
        return cfg
    raw = dump_config(cfg)
    raw["run_dir"] = str(cfg.layout.seed(k).root)
    raw["train"]["seed"] += k
    raw["data"]["seed"] += k
    return from_dict(RunConfig, raw, "")


def _prepare_seed_dir(cfg: RunConfig, seed_cfg: RunConfig) -> None:
    """Link the shared tokenizer and shards into a seed's run dir and write its pipeline config."""
    root = seed_cfg.layout.root
    root.mkdir(parents=True, exist_ok=True)
    for shared, link in ((cfg.tokenizer_dir, seed_cfg.tokenizer_dir), (cfg.shard_dir, seed_cfg.shard_dir)):
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(shared.resolve(), root.resolve()))
    seed_cfg.layout.pipeline_config.write_text(yaml.safe_dump(dump_config(seed_cfg), sort_keys=False))


def run_pipeline(cfg: RunConfig, with_baseline: bool = False, seeds: int = 1) -> int:
    """The recipe; with ``with_baseline`` also the single-phase baseline and the comparison of the two
    arms, over ``seeds`` paired seeds (each step of each seed is skipped when already done)."""
    start = time.time()
    if seeds < 1:
        raise InputError(f"--seeds: must be >= 1, got {seeds}")
    if seeds > 1 and not with_baseline:
        raise InputError("--seeds: needs --with-baseline (each seed trains and compares both arms)")
    run_dir = cfg.layout.root
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.layout.pipeline_config.write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
    ensure_corpus(cfg)
    ensure_tokenizer(cfg)
    ensure_shards(cfg)
    groups = {"meta": cfg.phases}
    if with_baseline:
        if not cfg.baseline:
            raise InputError("--with-baseline: the config has no 'baseline' phases")
        groups["baseline"] = cfg.baseline
    reports: dict[str, list[dict]] = {group: [] for group in groups}
    for k in range(seeds):
        seed_cfg = seed_config(cfg, k)
        if k:
            _prepare_seed_dir(cfg, seed_cfg)
        if seeds > 1:
            say(f"seed {k + 1} of {seeds}: {seed_cfg.layout.root} (train.seed {seed_cfg.train.seed}, "
                f"data.seed {seed_cfg.data.seed})")  # fmt: skip
        for group, phases in groups.items():
            for phase in phases:
                run_phase(seed_cfg, seed_cfg.layout.pipeline_config, phase)
            final = phases[-1]
            model_dir = ensure_converted(seed_cfg, final)
            reports[group].append(ensure_evaluated(seed_cfg, final, model_dir))
    comparison = None
    if with_baseline:
        from megameta.evaluate.compare import compare_reports

        comparison = compare_reports(reports, str(cfg.layout.comparison))
    _print_summary(cfg, groups, {g: r[0] for g, r in reports.items()}, comparison, time.time() - start)
    return 0


def _print_summary(cfg: RunConfig, groups: dict, reports: dict, comparison, seconds: float) -> None:
    from megameta.evaluate.report import format_key_metrics, key_metrics

    print("", flush=True)
    say(f"done in {seconds / 60:.1f} min")
    for group, phases in groups.items():
        for phase in phases:
            done = json.loads(cfg.layout.phase(phase.name).done.read_text())
            losses = ", ".join(f"{k} {v:.3f}" for k, v in done.get("valid_loss", {}).items())
            print(
                f"  phase {phase.name:<10} {done['step']} steps, {done['tokens']:,} tokens; valid loss: {losses}"
            )
            trend = loss_trend(cfg.layout.phase(phase.name).train_log)
            if trend:
                falling = all(last < first for first, last in trend.values())
                shown = ", ".join(f"{k} {a:.2f}->{b:.2f}" for k, (a, b) in trend.items())
                verdict = "all falling" if falling else "NOT all falling"
                print(f"    train loss, first -> last log window: {shown} [{verdict}]")
            if done.get("train_text_loss"):
                print(f"    {format_gaps(memorization_gaps(done))}")
        final = phases[-1]
        print(f"  model ({group}):  {cfg.layout.phase(final.name).hf}")
        print(f"  report ({group}):  {cfg.layout.phase(final.name).eval / 'report.md'}")
        print(f"  key numbers: {format_key_metrics(key_metrics(reports[group]))}")
    print(f"  TensorBoard:    tensorboard --logdir {cfg.run_dir}")
    if comparison is not None:
        n = comparison["n_seeds"]
        print(
            f"  comparison:     {cfg.layout.comparison / 'comparison.md'} ({n} seed{'s' * (n > 1)} per arm)"
        )
        for arm, keys in comparison["summary"].items():
            print(f"    {arm.replace('_', ' ')}: {', '.join(keys) or 'none'}")


#: Held-out minus training-text loss (nats, both measured alike at the end of a phase) above which a
#: language counts as memorized: the model fits its training text that much better than unseen text.
MEMORIZATION_MARGIN = 0.25


def memorization_gaps(done: dict) -> dict[str, float | None]:
    """Per language a phase trained: held-out loss minus the same measure on its training text, from
    the phase's ``DONE.json`` (``valid_loss``, ``train_text_loss``); None: no held-out text."""
    valid = done.get("valid_loss", {})
    return {
        lang: valid[lang] - seen if lang in valid else None for lang, seen in done["train_text_loss"].items()
    }


def format_gaps(gaps: dict[str, float | None], margin: float = MEMORIZATION_MARGIN) -> str:
    """``held-out - training-text loss: en +0.02, ... [none memorized (margin 0.25)]``, naming the
    languages over the margin and those with no held-out text."""
    shown = ", ".join(f"{k} {v:+.2f}" for k, v in gaps.items() if v is not None)
    over = [k for k, v in gaps.items() if v is not None and v > margin]
    unseen = [k for k, v in gaps.items() if v is None]
    problems = []
    if over:
        problems.append(f"MEMORIZED (over {margin}): {', '.join(over)}")
    if unseen:
        problems.append(f"no held-out text: {', '.join(unseen)}")
    verdict = "; ".join(problems) or f"none memorized (margin {margin})"
    return f"held-out - training-text loss: {shown or '-'} [{verdict}]"


def loss_trend(path: Path) -> dict[str, tuple[float, float]]:
    """Per-language training loss in the first and last logged windows of a phase's train log."""
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(rows) < 2:
        return {}
    first, last = rows[0]["lang_loss"], rows[-1]["lang_loss"]
    return {lang: (first[lang], last[lang]) for lang in first if lang in last}


__all__ = ["EXIT_BAD_INPUT", "run_pipeline"]
