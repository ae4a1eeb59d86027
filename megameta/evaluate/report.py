"""Run the evaluation suite and write the report; compare meta-pretrained runs with the baseline.

Files written by `run_evaluation` into ``out_dir``: ``report.json`` (everything, machine-readable),
``report.md`` (tables), ``mlm_loss.png`` and ``retrieval.png`` (when those parts ran).
`compare_reports` writes ``comparison.json``, ``comparison.md`` and ``comparison.png``.
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
from megameta.evaluate.classify import evaluate_classification, mean_std
from megameta.evaluate.common import check_model_dir, resolve_device
from megameta.evaluate.config import EvalConfig
from megameta.evaluate.mlm import evaluate_mlm
from megameta.evaluate.retrieval import evaluate_retrieval

PARTS = ("mlm", "retrieval", "classify")


def run_evaluation(
    model_dir: str, corpus_dir: str, cfg: EvalConfig, out_dir: str, progress: bool = True
) -> dict:
    """Run the parts enabled in `cfg` on the HF model in `model_dir`; write and return the report.

    Report keys: model_dir, corpus_dir, config, device, created, versions, timings_s (per part,
    seconds), results (``{part: part result}`` for the parts that ran). Raises `ConfigError` for a
    bad config and `InputError` naming the path for a missing model dir, corpus dir or data file.
    """
    cfg.validate()
    check_model_dir(model_dir)
    if not os.path.isdir(corpus_dir):
        raise InputError(f"corpus dir not found: {corpus_dir}")
    import transformers

    device = resolve_device(cfg.device)
    runners = {"mlm": evaluate_mlm, "retrieval": evaluate_retrieval, "classify": evaluate_classification}
    enabled = [p for p in PARTS if getattr(cfg, p)]
    results, timings = {}, {}
    for part in tqdm(enabled, desc="evaluate", disable=not progress):
        start = time.perf_counter()
        results[part] = runners[part](model_dir, corpus_dir, cfg, device, progress=progress)
        timings[part] = round(time.perf_counter() - start, 3)
    report = {
        "model_dir": os.path.abspath(model_dir),
        "corpus_dir": os.path.abspath(corpus_dir),
        "config": dataclasses.asdict(cfg),
        "device": str(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "timings_s": timings,
        "results": results,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_report_md(report))
    if "mlm" in results:
        _plot_mlm(results["mlm"], os.path.join(out_dir, "mlm_loss.png"))
    if "retrieval" in results:
        _plot_retrieval(results["retrieval"], os.path.join(out_dir, "retrieval.png"))
    return report


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_report_md(report: dict) -> str:
    """Markdown tables for one report dict (as returned by `run_evaluation`)."""
    res = report["results"]
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{report['model_dir']}`",
        f"- corpus: `{report['corpus_dir']}`",
        f"- device: {report['device']}; created {report['created']}",
        "- time per part: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timings_s"].items()),
        "",
    ]
    if "mlm" in res:
        lines += [
            "## Held-out masked-LM loss",
            "",
            "All selected tokens replaced by `<mask>`; loss in nats per masked token.",
            "",
            "| lang | loss | perplexity | masked tokens | docs |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {lang} | {r['loss']:.4f} | {r['perplexity']:.2f} | {r['tokens']} | {r['docs']} |"
            for lang, r in res["mlm"].items()
        ]
        lines.append("")
    if "retrieval" in res:
        r = res["retrieval"]
        langs = r["langs"]
        lines += [
            f"## UDHR article retrieval (layer {r['layer']}, mean-pooled, cosine)",
            "",
            "Row = query language, column = searched language; accuracy of finding the same article.",
            "",
            "| query \\ target | " + " | ".join(f"{c} ({r['scripts'][c]})" for c in langs) + " |",
            "|---|" + "---:|" * len(langs),
        ]
        for a in langs:
            cells = ["—" if a == b else _fmt(r["matrix"][a].get(b)) for b in langs]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"- mean over pairs: {_fmt(r['mean'])} (chance {_fmt(r['chance'])})",
            f"- same-script pairs: {_fmt(r['same_script_mean'])} ({r['same_script_pairs']} pairs)",
            f"- cross-script pairs: {_fmt(r['cross_script_mean'])} ({r['cross_script_pairs']} pairs)",
            "",
        ]
    if "classify" in res:
        c = res["classify"]
        lines += [
            f"## Topic classification (train {c['train_lang']}, mode {c['mode']}, seeds {c['seeds']})",
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
        lines.append("")
    return "\n".join(lines)


def _per_seed(counts: dict[str, int]) -> str:
    values = set(counts.values())
    return str(values.pop()) if len(values) == 1 else ", ".join(f"{v} (seed {k})" for k, v in counts.items())


def _save(fig: Figure, path: str) -> None:
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no display needed
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_mlm(mlm: dict, path: str) -> None:
    fig = Figure(figsize=(max(4.0, 0.8 * len(mlm) + 2), 3.5))
    ax = fig.add_subplot()
    ax.bar(list(mlm), [r["loss"] for r in mlm.values()], color="tab:blue")
    ax.set_ylabel("held-out MLM loss (nats / masked token)")
    ax.set_title("Masked-LM loss per language")
    _save(fig, path)


def _plot_retrieval(ret: dict, path: str) -> None:
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
    ax.set_title(f"UDHR article retrieval accuracy (chance {_fmt(ret['chance'], 2)})")
    if len(langs) <= 12:
        for i in range(len(langs)):
            for j in range(len(langs)):
                if not np.isnan(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax)
    _save(fig, path)


# --- meta vs baseline -------------------------------------------------------------------------


def _metrics_of(report: dict) -> dict[str, tuple[float, bool, str]]:
    """metric key -> (value, higher_is_better, description) for one report."""
    res, out = report.get("results", {}), {}
    if "classify" in res:
        c = res["classify"]
        for lang, r in c["langs"].items():
            kind = "in-language" if lang == c["train_lang"] else "zero-shot transfer"
            out[f"classify.{lang}"] = (r["accuracy_mean"], True, f"topic accuracy {lang} ({kind})")
    if "retrieval" in res:
        r = res["retrieval"]
        for key, desc in (
            ("mean", "all pairs"),
            ("same_script_mean", "same-script pairs"),
            ("cross_script_mean", "cross-script pairs"),
        ):
            if r.get(key) is not None:
                out[f"retrieval.{key}"] = (r[key], True, f"retrieval accuracy, {desc}")
    for lang, r in res.get("mlm", {}).items():
        out[f"mlm.{lang}"] = (r["loss"], False, f"MLM loss {lang} (lower is better)")
    return out


def _verdict(diff: float, se: float | None, higher_better: bool, names: tuple[str, str]) -> str:
    if se is None:
        return "one run on a side: no spread estimate, not conclusive"
    if se == 0.0:
        return "identical" if diff == 0.0 else "no spread across seeds: not conclusive"
    if abs(diff) <= 2 * se:
        return "within noise (|diff| <= 2 SE)"
    better = names[0] if (diff > 0) == higher_better else names[1]
    return f"{better} better (|diff| > 2 SE)"


def compare_reports(reports: dict[str, list[dict]], out_dir: str) -> dict:
    """Compare two groups of reports (one per pretraining seed), e.g. ``{"meta": [...], "baseline": [...]}``.

    The difference is first group minus second, with "meta" first when both "meta" and "baseline"
    are keys. Per metric: values, mean and std (ddof=1) per group, the difference of means and its
    standard error ``sqrt(s_a^2/n_a + s_b^2/n_b)``, and a verdict that calls a difference only when it
    exceeds 2 SE (a rough screen, not a formal test; with 2-3 seeds it is weak evidence either way).
    Writes comparison.json, comparison.md and comparison.png; returns the comparison dict.
    """
    if len(reports) != 2 or not all(reports.values()):
        raise InputError(f"compare_reports needs two non-empty groups, got {list(reports)}")
    names = ("meta", "baseline") if set(reports) == {"meta", "baseline"} else tuple(reports)
    per_group = {g: [_metrics_of(r) for r in reports[g]] for g in names}
    keys = [k for k in per_group[names[0]][0] if all(k in m for g in names for m in per_group[g])]
    metrics = {}
    for key in keys:
        _, higher, desc = per_group[names[0]][0][key]
        entry: dict = {"description": desc, "higher_is_better": higher}
        for g in names:
            vals = [m[key][0] for m in per_group[g]]
            mean, std = mean_std(vals)
            entry[g] = {"values": vals, "mean": mean, "std": std, "n": len(vals)}
        a, b = entry[names[0]], entry[names[1]]
        se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"]) if min(a["n"], b["n"]) > 1 else None
        entry["diff"] = a["mean"] - b["mean"]
        entry["diff_se"] = se
        entry["verdict"] = _verdict(entry["diff"], se, higher, names)
        metrics[key] = entry
    comparison = {
        "groups": list(names),
        "n_runs": {g: len(reports[g]) for g in names},
        "metrics": metrics,
        "summary": _summarize(metrics, names),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "comparison.json"), "w", encoding="utf-8") as f:
        json.dump(comparison, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(render_comparison_md(comparison))
    _plot_comparison(comparison, os.path.join(out_dir, "comparison.png"))
    return comparison


def _summarize(metrics: dict, names: tuple[str, str]) -> dict[str, list[str]]:
    """Cross-lingual metrics (transfer, retrieval) grouped by verdict: the paper's claim is about them."""
    out: dict[str, list[str]] = {f"{names[0]}_better": [], f"{names[1]}_better": [], "not_conclusive": []}
    for key, m in metrics.items():
        if not (key.startswith("retrieval.") or ("zero-shot" in m["description"])):
            continue
        if m["verdict"].startswith(f"{names[0]} better"):
            out[f"{names[0]}_better"].append(key)
        elif m["verdict"].startswith(f"{names[1]} better"):
            out[f"{names[1]}_better"].append(key)
        else:
            out["not_conclusive"].append(key)
    return out


def render_comparison_md(comparison: dict) -> str:
    """Side-by-side Markdown table and a plain-worded summary of a comparison dict."""
    a, b = comparison["groups"]
    n = comparison["n_runs"]
    lines = [
        f"# {a} vs {b}",
        "",
        f"Runs: {a} {n[a]}, {b} {n[b]} (one report per pretraining seed). Values are mean ± std over "
        f"runs; diff = {a} − {b} ± its standard error. A difference is called only beyond 2 SE.",
        "",
        f"| metric | {a} | {b} | diff ({a} − {b}) | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for m in comparison["metrics"].values():
        se = "" if m["diff_se"] is None else f" ± {m['diff_se']:.3f}"
        lines.append(
            f"| {m['description']} | {m[a]['mean']:.3f} ± {m[a]['std']:.3f} | "
            f"{m[b]['mean']:.3f} ± {m[b]['std']:.3f} | {m['diff']:+.3f}{se} | {m['verdict']} |"
        )
    s = comparison["summary"]

    def listed(keys: list[str]) -> str:
        return ", ".join(keys) if keys else "none"

    lines += [
        "",
        "## What these numbers support",
        "",
        "The claim under test: meta-pretraining on English before cross-lingual pretraining improves "
        "cross-lingual transfer (zero-shot topic accuracy, cross-lingual retrieval).",
        "",
        f"- {a} better beyond 2 SE on: {listed(s[f'{a}_better'])}",
        f"- {b} better beyond 2 SE on: {listed(s[f'{b}_better'])}",
        f"- no conclusion on: {listed(s['not_conclusive'])}",
        "",
    ]
    if min(n.values()) < 2:
        lines.append(
            "With a single run on a side there is no estimate of seed variance: nothing here is conclusive."
        )
    elif s[f"{a}_better"] and not s[f"{b}_better"]:
        lines.append(
            f"The cross-lingual metrics listed first favour {a}; with {min(n.values())}-{max(n.values())} "
            "runs per side this is consistent with the claim at this scale, not proof of it."
        )
    elif s[f"{b}_better"] and not s[f"{a}_better"]:
        lines.append(
            f"The cross-lingual metrics that differ favour {b}: at this scale the claim is not reproduced."
        )
    elif s[f"{a}_better"] and s[f"{b}_better"]:
        lines.append("The cross-lingual metrics point in different directions: no overall conclusion.")
    else:
        lines.append(f"No cross-lingual metric separates {a} from {b} beyond seed noise at this scale.")
    lines.append("")
    return "\n".join(lines)


def _short(key: str) -> str:
    part, name = key.split(".", 1)
    if part == "retrieval":
        return "retrieval " + {"mean": "all", "same_script_mean": "same-script"}.get(name, "cross-script")
    return f"topic {name}" if part == "classify" else name


def _plot_comparison(comparison: dict, path: str) -> None:
    groups, metrics = comparison["groups"], comparison["metrics"]
    acc = [k for k, m in metrics.items() if m["higher_is_better"]]
    loss = [k for k, m in metrics.items() if not m["higher_is_better"]]
    fig = Figure(figsize=(max(6.0, 0.9 * len(acc) + 0.6 * len(loss) + 3), 4))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(len(acc), 1), max(len(loss), 1)]})
    width = 0.8 / len(groups)
    for ax, keys, ylabel in ((axes[0], acc, "accuracy"), (axes[1], loss, "MLM loss (lower is better)")):
        for i, g in enumerate(groups):
            xs = np.arange(len(keys)) + (i - (len(groups) - 1) / 2) * width
            ax.bar(
                xs,
                [metrics[k][g]["mean"] for k in keys],
                width,
                yerr=[metrics[k][g]["std"] for k in keys],
                capsize=3,
                label=g,
            )
        ax.set_xticks(range(len(keys)), [_short(k) for k in keys], rotation=45, ha="right")
        ax.set_ylabel(ylabel)
    axes[0].set_title("classification / retrieval")
    axes[1].set_title("held-out MLM loss")
    axes[0].legend()
    _save(fig, path)
