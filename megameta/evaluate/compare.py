"""Compare meta-pretrained runs with the single-phase baseline, metric by metric.

`compare_reports` takes one evaluation report per pretraining seed and arm, compares the arms on
every `key_metrics` entry both have (perplexity left out: it is exp of the MLM loss), and writes
``comparison.json``, ``comparison.md`` and ``comparison.png``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from matplotlib.figure import Figure

from megameta.errors import InputError
from megameta.evaluate.classify import mean_std
from megameta.evaluate.report import RETRIEVAL_KEYS, key_metrics, save_figure


def _describe(key: str, report: dict) -> tuple[bool, str]:
    """(higher_is_better, description) of a `key_metrics` key, for the comparison table."""
    lang = key[key.find("[") + 1 : -1]
    if key.startswith("acc["):
        kind = "in-language" if lang == report["results"]["classify"]["train_lang"] else "zero-shot transfer"
        return True, f"topic accuracy {lang} ({kind})"
    if key.startswith("mlm_loss["):
        return False, f"MLM loss {lang} (lower is better)"
    pairs = {
        "retrieval": "all pairs",
        "same-script": "same-script pairs",
        "cross-script": "cross-script pairs",
    }
    return True, f"retrieval accuracy, {pairs[key]}"


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
    per_group = {g: [key_metrics(r) for r in reports[g]] for g in names}
    # Perplexity is exp(loss): comparing both would count one difference twice.
    keys = [
        k
        for k in per_group[names[0]][0]
        if not k.startswith("ppl[") and all(k in m for g in names for m in per_group[g])
    ]
    metrics = {}
    for key in keys:
        higher, desc = _describe(key, reports[names[0]][0])
        entry: dict = {"description": desc, "higher_is_better": higher}
        for g in names:
            vals = [m[key] for m in per_group[g]]
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
        if not (key in RETRIEVAL_KEYS.values() or "zero-shot" in m["description"]):
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
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
        ax.set_ylabel(ylabel)
    axes[0].set_title("classification / retrieval")
    axes[1].set_title("held-out MLM loss")
    axes[0].legend()
    save_figure(fig, path)
