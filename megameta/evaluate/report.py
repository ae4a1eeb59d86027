"""Run the evaluation tasks and write the report; name a report's key metrics.

Files written by `run_evaluation` into ``out_dir``: ``report.json`` (everything, machine-readable),
``report.md`` (tables), and a plot per mlm or all-aligned retrieval task: ``mlm_loss.png`` and
``retrieval.png`` for the demo's default tasks, ``<task>.png`` for the others.
`key_metrics` is the one definition of a report's headline numbers; `megameta.evaluate.compare`
compares them between meta-pretrained runs and the baseline.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from megameta.errors import InputError
from megameta.evaluate.classify import evaluate_classification
from megameta.evaluate.common import EvalRun, check_model_dir, check_task_files
from megameta.evaluate.config import DEFAULT_TASKS, EvalConfig
from megameta.evaluate.mlm import evaluate_mlm
from megameta.evaluate.retrieval import evaluate_retrieval
from megameta.kernels import resolve_device

#: Task type -> the function that runs one task of it.
RUNNERS = {"mlm": evaluate_mlm, "retrieval": evaluate_retrieval, "classification": evaluate_classification}
#: Plot file of the default tasks (historical names); other tasks plot to ``<name>.png``.
_PLOT_NAMES = {"mlm": "mlm_loss.png", "retrieval": "retrieval.png"}


def run_evaluation(
    model_dir: str, corpus_dir: str, cfg: EvalConfig, out_dir: str, progress: bool = True
) -> dict:
    """Run the tasks of `cfg` (`EvalConfig.task_list`) on the HF model in `model_dir`; write and
    return the report.

    Report keys: model_dir, corpus_dir, config, device, created, versions, tasks (``{name: type}``,
    in run order), timings_s (per task, seconds), results (``{name: task result}``). Raises
    `ConfigError` for a bad config or a task file that does not exist (before the model is loaded),
    `InputError` naming the path for a missing model dir, corpus dir or a malformed data file.
    """
    cfg.validate()
    check_model_dir(model_dir)
    if not os.path.isdir(corpus_dir):
        raise InputError(f"corpus dir not found: {corpus_dir}")
    check_task_files(cfg, corpus_dir)
    import transformers

    device = resolve_device(cfg.device)
    tasks = [task for _, task in cfg.task_list()]
    results, timings = {}, {}
    for task in tqdm(tasks, desc="evaluate", disable=not progress):
        start = time.perf_counter()
        results[task.name] = RUNNERS[task.type](EvalRun(model_dir, corpus_dir, cfg, device, progress), task)
        timings[task.name] = round(time.perf_counter() - start, 3)
    report = {
        "model_dir": os.path.abspath(model_dir),
        "corpus_dir": os.path.abspath(corpus_dir),
        "config": dataclasses.asdict(cfg),
        "device": str(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "tasks": {task.name: task.type for task in tasks},
        "timings_s": timings,
        "results": results,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_report_md(report))
    for name, kind in report["tasks"].items():
        path = os.path.join(
            out_dir, f"{name}.png" if metric_prefix(name, kind) else _PLOT_NAMES.get(kind, "")
        )
        if kind == "mlm":
            _plot_mlm(results[name], path)
        elif kind == "retrieval" and results[name]["mode"] == "files":
            _plot_retrieval(results[name], path, "UDHR paragraph" if not metric_prefix(name, kind) else name)
    return report


def task_types(report: dict) -> dict[str, str]:
    """Task name -> type of a report, in run order; reports written before tasks existed hold the
    demo's default tasks under their names."""
    if "tasks" in report:
        return report["tasks"]
    return {name: kind for name, kind in DEFAULT_TASKS.items() if name in report.get("results", {})}


def metric_prefix(name: str, kind: str) -> str:
    """``""`` for the demo's default tasks (their historical keys), ``"<name>:"`` for any other."""
    return "" if DEFAULT_TASKS.get(name) == kind else f"{name}:"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_report_md(report: dict) -> str:
    """Markdown tables for one report dict (as returned by `run_evaluation`)."""
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{report['model_dir']}`",
        f"- corpus: `{report['corpus_dir']}`",
        f"- device: {report['device']}; created {report['created']}",
        "- time per task: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timings_s"].items()),
        "",
    ]
    render = {"mlm": _md_mlm, "retrieval": _md_retrieval, "classification": _md_classification}
    for name, kind in task_types(report).items():
        default = DEFAULT_TASKS.get(name) == kind
        lines += render[kind](report["results"][name], "" if default else f"{name}: ", default)
    return "\n".join(lines)


def _md_mlm(res: dict, title: str, default: bool) -> list[str]:
    lines = [
        f"## {title}Held-out masked-LM loss",
        "",
        "All selected tokens replaced by `<mask>`; loss in nats per masked token.",
        "",
        "| lang | loss | perplexity | masked tokens | docs |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {lang} | {r['loss']:.4f} | {r['perplexity']:.2f} | {r['tokens']} | {r['docs']} |"
        for lang, r in res.items()
    ]
    return [*lines, ""]


def _md_retrieval(r: dict, title: str, default: bool) -> list[str]:
    what = "UDHR paragraph" if default else "parallel"
    lines = [f"## {title}{what} retrieval (layer {r['layer']}, mean-pooled, cosine)", ""]
    if r.get("mode", "files") == "files":
        langs = r["langs"]
        lines += [
            "Row = query language, column = searched language; accuracy of finding the same item.",
            "",
            "| query \\ target | " + " | ".join(f"{c} ({r['scripts'][c]})" for c in langs) + " |",
            "|---|" + "---:|" * len(langs),
        ]
        for a in langs:
            cells = ["—" if a == b else _fmt(r["matrix"][a].get(b)) for b in langs]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    else:
        lines += [
            "Each aligned pair, both directions.",
            "",
            "| a | b | a → b | b → a | items |",
            "|---|---|---:|---:|---:|",
        ]
        for a, b in r["pairs"]:
            ab, ba = r["matrix"][a].get(b), r["matrix"][b].get(a)
            lines.append(f"| {a} | {b} | {_fmt(ab)} | {_fmt(ba)} | {r['items'][a].get(b, 0)} |")
    lines += [
        "",
        f"- mean over pairs: {_fmt(r['mean'])} (chance {_fmt(r['chance'])})",
        f"- same-script pairs: {_fmt(r['same_script_mean'])} ({r['same_script_pairs']} pairs)",
        f"- cross-script pairs: {_fmt(r['cross_script_mean'])} ({r['cross_script_pairs']} pairs)",
        "",
    ]
    return lines


def _md_classification(c: dict, title: str, default: bool) -> list[str]:
    what = "Topic classification" if default else "classification"
    lines = [
        f"## {title}{what} (train {c['train_lang']}, mode {c['mode']}, seeds {c['seeds']})",
        "",
        f"{len(c['labels'])} labels; training examples per seed: {_per_seed(c['n_train'])} "
        f"(of {c['n_train_available']} labeled). Baseline = most frequent training label.",
        "",
        "| lang | accuracy (mean ± std) | per seed | majority baseline | test docs |",
        "|---|---:|---|---:|---:|",
    ]
    for lang, r in c["langs"].items():
        tag = "" if lang == c["train_lang"] else " (zero-shot)"
        seeds = ", ".join(f"{a:.3f}" for a in r["accuracy_per_seed"])
        lines.append(
            f"| {lang}{tag} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} | {seeds} | "
            f"{r['majority_baseline']:.3f} | {r['n_test']} |"
        )
    return [*lines, ""]


def _per_seed(counts: dict[str, int]) -> str:
    values = set(counts.values())
    return str(values.pop()) if len(values) == 1 else ", ".join(f"{v} (seed {k})" for k, v in counts.items())


def save_figure(fig: Figure, path: str) -> None:
    """Render `fig` to a PNG at `path` with the Agg backend (no pyplot, no display)."""
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no display needed
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_mlm(mlm: dict, path: str) -> None:
    fig = Figure(figsize=(max(4.0, 0.8 * len(mlm) + 2), 3.5))
    ax = fig.add_subplot()
    ax.bar(list(mlm), [r["loss"] for r in mlm.values()], color="tab:blue")
    ax.set_ylabel("held-out MLM loss (nats / masked token)")
    ax.set_title("Masked-LM loss per language")
    save_figure(fig, path)


def _plot_retrieval(ret: dict, path: str, what: str) -> None:
    langs = ret["langs"]
    mat = np.array([[np.nan if a == b else ret["matrix"][a].get(b, np.nan) for b in langs] for a in langs])
    size = max(4.0, 0.6 * len(langs) + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(langs)), langs, rotation=90)
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("target language")
    ax.set_ylabel("query language")
    ax.set_title(f"{what} retrieval accuracy (chance {_fmt(ret['chance'], 2)})")
    if len(langs) <= 12:
        for i in range(len(langs)):
            for j in range(len(langs)):
                if not np.isnan(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


# --- key metrics ------------------------------------------------------------------------------


#: Retrieval summary field of a report -> its key metric name (in this order).
RETRIEVAL_KEYS = {"mean": "retrieval", "same_script_mean": "same-script", "cross_script_mean": "cross-script"}


def key_metrics(report: dict) -> dict[str, float]:
    """The headline numbers of one report (as returned by `run_evaluation`), under stable names.

    Per task, in run order, each key prefixed with ``<task name>:`` except for the demo's default
    tasks (``mlm``, ``retrieval``, ``classify``), whose keys are the historical ones:

    - mlm: ``ppl[<lang>]``, held-out MLM perplexity per language (lower is better), then
      ``mlm_loss[<lang>]``, the same as loss in nats per masked token (lower is better)
    - retrieval: ``retrieval``, top-1 accuracy, mean over all ordered language pairs; ``same-script``,
      ``cross-script``: that mean over same-script / cross-script pairs (present when the task's
      languages have a pair of that kind with known scripts)
    - classification: ``acc[<lang>]``, accuracy, mean over seeds, per test language

    e.g. ``ppl[en]``, ``retrieval``, ``acc[fr]``, ``xnli:acc[fr]``, ``tatoeba:retrieval``. The
    pipeline's "key numbers" line (`format_key_metrics`), the comparison of meta-pretrained runs with
    the baseline and the ``eval/*`` training scalars all read these.
    """
    res = report.get("results", {})
    out: dict[str, float] = {}
    for name, kind in task_types(report).items():
        r, p = res.get(name) or {}, metric_prefix(name, kind)
        if kind == "mlm":
            out.update({f"{p}ppl[{lang}]": m["perplexity"] for lang, m in r.items()})
            out.update({f"{p}mlm_loss[{lang}]": m["loss"] for lang, m in r.items()})
        elif kind == "retrieval":
            out.update(
                {p + key: r[field] for field, key in RETRIEVAL_KEYS.items() if r.get(field) is not None}
            )
        else:
            out.update({f"{p}acc[{lang}]": m["accuracy_mean"] for lang, m in (r.get("langs") or {}).items()})
    return out


def split_key(key: str) -> tuple[str, str, str]:
    """``"xnli:acc[fr]"`` -> ``("xnli", "acc", "fr")``; ``"retrieval"`` -> ``("", "retrieval", "")``."""
    task, _, rest = key.rpartition(":")
    metric, _, lang = rest.partition("[")
    return task, metric, lang.rstrip("]")


def format_key_metrics(metrics: dict[str, float]) -> str:
    """One line ``ppl[en]=661 ... retrieval=0.113 ... acc[en]=0.601`` from `key_metrics`.

    Perplexities with 0 decimals, everything else with 3; ``mlm_loss[*]`` is left out (the
    perplexity says the same). ``"(see report)"`` when nothing is left.
    """
    parts = [
        f"{key}={value:.0f}" if split_key(key)[1] == "ppl" else f"{key}={value:.3f}"
        for key, value in metrics.items()
        if split_key(key)[1] != "mlm_loss"
    ]
    return " ".join(parts) or "(see report)"
