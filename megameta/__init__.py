"""MegaMeta: cross-lingual language model meta-pretraining with DeepSpeed."""

__version__ = "0.1.0"
