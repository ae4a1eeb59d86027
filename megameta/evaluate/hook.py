"""The evaluation suite during training (``train.eval_suite_every``): convert a fresh checkpoint,
evaluate it, log ``eval/*`` scalars. Runs on rank 0 while the other ranks wait."""

from __future__ import annotations

import shutil

from megameta.evaluate.config import EvalConfig
from megameta.layout import PhaseLayout


def eval_suite_scalars(report: dict) -> dict[str, float]:
    """TensorBoard scalars (``eval/*``) from an evaluation report."""
    results = report["results"]
    scalars = {f"eval/mlm_loss_{k}": v["loss"] for k, v in (results.get("mlm") or {}).items()}
    for key in ("mean", "same_script_mean", "cross_script_mean"):
        if (results.get("retrieval") or {}).get(key) is not None:
            scalars[f"eval/retrieval_{key}"] = results["retrieval"][key]
    for lang, v in ((results.get("classify") or {}).get("langs") or {}).items():
        scalars[f"eval/topic_accuracy_{lang}"] = v["accuracy_mean"]
    return scalars


def run_eval_suite(
    layout: PhaseLayout, step: int, tag: str, corpus_dir: str, cfg: EvalConfig, log=print
) -> dict[str, float]:
    """Evaluate checkpoint ``tag`` of a phase into ``eval_suite/<tag>/`` (report.json/.md); returns the
    ``eval/*`` scalars."""
    from megameta.convert import convert
    from megameta.evaluate.report import run_evaluation

    out = layout.eval_suite(tag)
    convert(layout.checkpoints / tag, out / "hf", tag=None, verify=False)
    report = run_evaluation(str(out / "hf"), corpus_dir, cfg, str(out), progress=False)
    shutil.rmtree(out / "hf", ignore_errors=True)  # the report stays; the weights are in the checkpoint
    log(f"[train] evaluation suite at step {step}: {out / 'report.md'}")
    return eval_suite_scalars(report)
