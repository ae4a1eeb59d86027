"""Evaluation suite: tasks of three types on files the user has (docs/evaluation.md): held-out MLM loss,
cross-lingual retrieval on aligned text, zero-shot cross-lingual classification. Without configured
tasks, the demo's three: MLM loss, UDHR article retrieval, topic classification.

Entry points: `run_evaluation` (one model -> report.json/.md + plots) and `compare_reports`
(meta-pretrained runs vs the single-phase baseline).

Names resolve lazily (PEP 562): loading a run config imports ``evaluate.config`` only,
not torch, transformers and matplotlib.
"""

from megameta.lazy import lazy_getattr

__getattr__, __all__ = lazy_getattr(
    __name__,
    {
        "config": ("CANONICAL_LABELS", "EvalConfig", "TaskConfig"),
        "readers": ("read_aligned", "read_labeled"),
        "common": ("EvalRun",),
        "classify": ("accuracy", "evaluate_classification", "majority_baseline", "mean_std"),
        "mlm": ("evaluate_mlm",),
        "report": ("format_key_metrics", "key_metrics", "run_evaluation"),
        "compare": ("compare_reports",),
        "retrieval": (
            "cosine_similarity",
            "evaluate_retrieval",
            "retrieval_accuracy",
            "split_pairs_by_script",
        ),
    },
)
