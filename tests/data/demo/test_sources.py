"""The demo corpus tables (megameta.data.demo.sources) and what importing them costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megameta.data.demo.sources import LABELS, TOPIC_LABELS, WIKI_LANGS, udhr_file, wiki_file

HEAVY = ("torch", "tqdm", "subprocess", "zipfile", "tarfile", "megameta.data.demo.download")


def test_topic_table_maps_the_eight_shared_topics():
    assert len(LABELS) == 8 and LABELS[0] == "People"
    assert set(TOPIC_LABELS) == set(WIKI_LANGS)
    for table in TOPIC_LABELS.values():
        assert sorted(table.values()) == sorted(LABELS)
    assert TOPIC_LABELS["es"]["Antropología, sicología y vida cotidiana"] == "Everyday life"
    assert TOPIC_LABELS["fr"]["Vie quotidienne"] == "Everyday life"


def test_layout_paths():
    assert wiki_file("fr", "test") == "wiki/fr/test.jsonl"
    assert udhr_file("heldout", "cmn_hans") == "udhr/heldout/cmn_hans.jsonl"


@pytest.mark.parametrize("module", ["megameta.data.demo.sources", "megameta.data.demo", "megameta.config"])
def test_import_is_light(module):
    """The tables, the package and a run config load without torch, tqdm or the package clients."""
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == []
