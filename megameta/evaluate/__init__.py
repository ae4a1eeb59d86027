"""Evaluation suite: held-out MLM loss, cross-lingual UDHR retrieval, zero-shot topic classification.

Entry points: `run_evaluation` (one model -> report.json/.md + plots) and `compare_reports`
(meta-pretrained runs vs the single-phase baseline).

Names resolve lazily (PEP 562): loading a run config imports ``evaluate.config`` only,
not torch, transformers and matplotlib.
"""

from importlib import import_module

_EXPORTS = {
    "CANONICAL_LABELS": "config",
    "EvalConfig": "config",
    "accuracy": "classify",
    "evaluate_classification": "classify",
    "majority_baseline": "classify",
    "mean_std": "classify",
    "evaluate_mlm": "mlm",
    "compare_reports": "report",
    "run_evaluation": "report",
    "cosine_similarity": "retrieval",
    "evaluate_retrieval": "retrieval",
    "retrieval_accuracy": "retrieval",
    "split_pairs_by_script": "retrieval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'megameta.evaluate' has no attribute {name!r}")
    return getattr(import_module(f"megameta.evaluate.{_EXPORTS[name]}"), name)
