"""Corpus fetching, normalization and loading for MegaMeta."""
