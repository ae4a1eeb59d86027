"""Compare meta-pretrained runs with the single-phase baseline, metric by metric, paired by seed.

`compare_reports` takes one evaluation report per pretraining seed and arm (the i-th report of each arm
comes from the same seed), compares the arms on every `key_metrics` entry both have (perplexity left
out: it is exp of the MLM loss), and writes ``comparison.json``, ``comparison.md`` and ``comparison.png``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from matplotlib.figure import Figure

from megameta.errors import InputError
from megameta.evaluate.classify import mean_std
from megameta.evaluate.report import (
    RETRIEVAL_KEYS,
    key_metrics,
    metric_prefix,
    save_figure,
    split_key,
    task_types,
)

#: Confidence level of the paired interval.
LEVEL = 0.95


def _describe(key: str, report: dict) -> tuple[bool, str]:
    """(higher_is_better, description) of a `key_metrics` key, for the comparison table.

    Keys of user tasks carry the task name (``xnli:acc[fr]``): a language is zero-shot when it is not
    that task's training language.
    """
    task, metric, lang = split_key(key)
    types = task_types(report)
    name = task or next(
        (n for n, kind in types.items() if not metric_prefix(n, kind) and kind == _KIND[metric]), ""
    )
    what = f"{task} " if task else ""
    if metric == "acc":
        train_lang = ((report.get("results") or {}).get(name) or {}).get("train_lang")
        kind = "in-language" if lang == train_lang else "zero-shot transfer"
        return True, f"{what or 'topic '}accuracy {lang} ({kind})"
    if metric == "mlm_loss":
        return False, f"{what}MLM loss {lang} (lower is better)"
    if metric == "ppl":
        return False, f"{what}perplexity {lang} (lower is better)"
    pairs = {
        "retrieval": "all pairs",
        "same-script": "same-script pairs",
        "cross-script": "cross-script pairs",
    }
    return True, f"{what}retrieval accuracy, {pairs[metric]}"


#: key_metrics metric name -> the task type that produces it.
_KIND = {
    "acc": "classification",
    "mlm_loss": "mlm",
    "ppl": "mlm",
    **dict.fromkeys(RETRIEVAL_KEYS.values(), "retrieval"),
}


def paired_interval(
    a: list[float], b: list[float], level: float = LEVEL
) -> tuple[float, float, float] | None:
    """Mean of the per-seed differences ``a[i] - b[i]`` and its ``level`` interval (Student t, n - 1
    degrees of freedom): ``(mean, low, high)``; None with fewer than 2 pairs (no spread estimate)."""
    if len(a) != len(b):
        raise InputError(
            f"paired comparison needs one value per seed on each side, got {len(a)} and {len(b)}"
        )
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(d.mean()) if d.size else 0.0
    if d.size < 2:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def verdict(interval: tuple[float, float, float] | None, higher_better: bool, names: tuple[str, str]) -> str:
    """Name a better arm only when the paired interval excludes zero."""
    if interval is None:
        return "one seed: no interval, not conclusive"
    mean, low, high = interval
    if low == high == 0.0:
        return "identical"
    if low <= 0.0 <= high:
        return f"not conclusive ({LEVEL:.0%} interval includes 0)"
    better = names[0] if (mean > 0) == higher_better else names[1]
    return f"{better} better ({LEVEL:.0%} interval excludes 0)"


def compare_reports(reports: dict[str, list[dict]], out_dir: str) -> dict:
    """Compare two arms' reports, one per pretraining seed in the same seed order, e.g.
    ``{"meta": [...], "baseline": [...]}``.

    The difference is first arm minus second, with "meta" first when both "meta" and "baseline" are keys.
    Per metric: each arm's values, mean and std (ddof=1), and the per-seed paired differences with their
    mean and 95% Student-t interval. The verdict names a better arm only when that interval excludes zero;
    with one seed there is no interval and nothing is concluded. Writes comparison.json, comparison.md
    and comparison.png; returns the comparison dict.
    """
    if len(reports) != 2 or not all(reports.values()):
        raise InputError(f"compare_reports needs two non-empty groups, got {list(reports)}")
    names = ("meta", "baseline") if set(reports) == {"meta", "baseline"} else tuple(reports)
    if len(reports[names[0]]) != len(reports[names[1]]):
        raise InputError(
            f"compare_reports pairs the arms by seed: {names[0]} has {len(reports[names[0]])} reports, "
            f"{names[1]} {len(reports[names[1]])}"
        )
    per_group = {g: [key_metrics(r) for r in reports[g]] for g in names}
    # Perplexity is exp(loss): comparing both would count one difference twice.
    keys = [
        k
        for k in per_group[names[0]][0]
        if split_key(k)[1] != "ppl" and all(k in m for g in names for m in per_group[g])
    ]
    metrics = {}
    for key in keys:
        higher, desc = _describe(key, reports[names[0]][0])
        entry: dict = {"description": desc, "higher_is_better": higher}
        for g in names:
            vals = [m[key] for m in per_group[g]]
            mean, std = mean_std(vals)
            entry[g] = {"values": vals, "mean": mean, "std": std, "n": len(vals)}
        a, b = entry[names[0]]["values"], entry[names[1]]["values"]
        interval = paired_interval(a, b)
        entry["diffs"] = [x - y for x, y in zip(a, b, strict=True)]
        entry["diff"] = float(np.mean(entry["diffs"]))
        entry["diff_interval"] = None if interval is None else [interval[1], interval[2]]
        entry["verdict"] = verdict(interval, higher, names)
        metrics[key] = entry
    comparison = {
        "groups": list(names),
        "n_seeds": len(reports[names[0]]),
        "level": LEVEL,
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
        if not (split_key(key)[1] in RETRIEVAL_KEYS.values() or "zero-shot" in m["description"]):
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
    n, level = comparison["n_seeds"], f"{comparison['level']:.0%}"
    lines = [
        f"# {a} vs {b}",
        "",
        f"Seeds: {n} per arm, paired (both arms of a seed share its data order, masking and init seed). "
        f"Values are mean ± std over seeds; diff = {a} − {b}, the mean of the per-seed differences, with its "
        f"{level} Student-t interval. A better arm is named only when the interval excludes 0.",
        "",
        f"| metric | {a} | {b} | diff ({a} − {b}) | {level} interval | verdict |",
        "|---|---:|---:|---:|:---:|---|",
    ]
    for m in comparison["metrics"].values():
        ci = "—" if m["diff_interval"] is None else "[{:+.3f}, {:+.3f}]".format(*m["diff_interval"])
        lines.append(
            f"| {m['description']} | {m[a]['mean']:.3f} ± {m[a]['std']:.3f} | "
            f"{m[b]['mean']:.3f} ± {m[b]['std']:.3f} | {m['diff']:+.3f} | {ci} | {m['verdict']} |"
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
        f"- {a} better ({level} interval excludes 0) on: {listed(s[f'{a}_better'])}",
        f"- {b} better ({level} interval excludes 0) on: {listed(s[f'{b}_better'])}",
        f"- no conclusion on: {listed(s['not_conclusive'])}",
        "",
    ]
    if n < 2:
        lines.append("With one seed there is no estimate of seed variance: nothing here is conclusive.")
    elif s[f"{a}_better"] and not s[f"{b}_better"]:
        lines.append(
            f"The cross-lingual metrics that differ favour {a}: with {n} seeds this is consistent with the "
            "claim at this scale, not proof of it."
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
    """Every seed's value per arm (dots; a seed's two arms joined by a thin line) and each arm's mean
    (a bar), metric by metric: accuracies on the left, held-out MLM losses on the right."""
    groups, metrics = comparison["groups"], comparison["metrics"]
    acc = [k for k, m in metrics.items() if m["higher_is_better"]]
    loss = [k for k, m in metrics.items() if not m["higher_is_better"]]
    fig = Figure(figsize=(max(6.0, 0.9 * len(acc) + 0.6 * len(loss) + 3), 4))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(len(acc), 1), max(len(loss), 1)]})
    width = 0.8 / len(groups)
    colors = ("tab:blue", "tab:orange")
    for ax, keys, ylabel in ((axes[0], acc, "accuracy"), (axes[1], loss, "MLM loss (lower is better)")):
        offsets = [(i - (len(groups) - 1) / 2) * width for i in range(len(groups))]
        for j, key in enumerate(keys):
            seeds = [metrics[key][g]["values"] for g in groups]
            for pair in zip(*seeds, strict=True):
                ax.plot([j + o for o in offsets], pair, color="0.6", linewidth=0.7, zorder=2)
        for i, g in enumerate(groups):
            xs = np.arange(len(keys)) + offsets[i]
            ax.bar(xs, [metrics[k][g]["mean"] for k in keys], width, color=colors[i], alpha=0.35, label=g)
            for x, key in zip(xs, keys, strict=True):
                vals = metrics[key][g]["values"]
                ax.scatter(
                    [x] * len(vals), vals, s=14, color=colors[i], edgecolor="black", linewidth=0.4, zorder=3
                )
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
        ax.set_ylabel(ylabel)
    axes[0].set_title(f"classification / retrieval ({comparison['n_seeds']} seeds)")
    axes[1].set_title("held-out MLM loss")
    axes[0].legend()
    save_figure(fig, path)
