"""Evaluation suite: held-out MLM loss, cross-lingual UDHR retrieval, zero-shot topic classification.

Entry points: `run_evaluation` (one model -> report.json/.md + plots) and `compare_reports`
(meta-pretrained runs vs the single-phase baseline).
"""

from megameta.evaluate.classify import accuracy, evaluate_classification, majority_baseline, mean_std
from megameta.evaluate.config import CANONICAL_LABELS, EvalConfig
from megameta.evaluate.mlm import evaluate_mlm
from megameta.evaluate.report import compare_reports, run_evaluation
from megameta.evaluate.retrieval import (
    cosine_similarity,
    evaluate_retrieval,
    retrieval_accuracy,
    split_pairs_by_script,
)

__all__ = [
    "CANONICAL_LABELS",
    "EvalConfig",
    "accuracy",
    "compare_reports",
    "cosine_similarity",
    "evaluate_classification",
    "evaluate_mlm",
    "evaluate_retrieval",
    "majority_baseline",
    "mean_std",
    "retrieval_accuracy",
    "run_evaluation",
    "split_pairs_by_script",
]
