"""The evaluation suite during training (``train.eval_suite_every``): convert a fresh checkpoint,
evaluate it, log ``eval/*`` scalars. Runs on rank 0 while the other ranks wait."""

from __future__ import annotations

import shutil

from megameta.evaluate.config import EvalConfig
from megameta.evaluate.report import key_metrics, split_key
from megameta.layout import PhaseLayout

#: key_metrics name -> TensorBoard tag under ``eval/`` (per-language keys keep their language).
_TAGS = {"mlm_loss": "mlm_loss_{}", "acc": "topic_accuracy_{}", "retrieval": "retrieval_mean",
         "same-script": "retrieval_same_script_mean", "cross-script": "retrieval_cross_script_mean"}  # fmt: skip


def eval_suite_scalars(report: dict) -> dict[str, float]:
    """TensorBoard scalars (``eval/*``) from an evaluation report's key metrics (perplexity is left
    out: it is the exponential of the MLM loss logged beside it). A user task's scalars go under
    ``eval/<task>/`` with the task-neutral tag (``eval/xnli/accuracy_fr``)."""
    out = {}
    for key, value in key_metrics(report).items():
        task, kind, lang = split_key(key)
        if kind in _TAGS:
            tag = _TAGS[kind].format(lang)
            out[f"eval/{task}/{tag.removeprefix('topic_')}" if task else f"eval/{tag}"] = value
    return out


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
