"""Preprocessing in pieces (many machines) and exact deduplication: the same bytes as one machine."""

from __future__ import annotations

import json
import lzma
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, cli_env, megameta, write_config

from megameta.data import units
from megameta.data.documents import normalized_hash
from megameta.data.preprocess import preprocess
from megameta.data.units import piece_owners

LANGS = ("en", "fr")


def _tree(root: Path) -> dict[str, bytes]:
    """Every shard file and the manifest, by relative path (done records, parts and temporaries excluded)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (p.suffix in (".bin", ".idx") or p.name == "manifest.json")
    }


def _paragraph_corpus(root: Path, data_corpus: dict[str, list[str]], n_docs: int) -> dict[str, int]:
    """CC-100-layout ``root/cc100/{lang}.txt.xz`` files; returns the duplicate documents planted per language."""
    (root / "cc100").mkdir(parents=True)
    planted = {}
    for lang in LANGS:
        paras = [json.loads(line)["text"] for line in open(data_corpus[lang][0], encoding="utf-8")]
        rng = random.Random(lang)
        docs = ["\n".join(f"{i} {p}" for p in rng.sample(paras, rng.randint(1, 3))) for i in range(n_docs)]
        # exact and near-exact (case, spacing) repeats of earlier documents: dropped by dedup
        repeats = rng.sample(range(n_docs), n_docs // 20)
        for j in repeats:
            docs.insert(rng.randrange(j + 1, len(docs) + 1), docs[j].upper().replace(" ", "  "))
        planted[lang] = len(repeats)
        text = "".join(d + "\n\n" for d in docs)
        (root / "cc100" / f"{lang}.txt.xz").write_bytes(lzma.compress(text.encode(), preset=0))
    return planted


def _config(run: Path, corpus: Path, tokenizer: Path) -> Path:
    shutil.copytree(tokenizer, run / "tokenizer")
    cfg = {
        "run_dir": str(run),
        "corpus": {"dir": str(corpus), "demo": False},
        "data": {
            "langs": list(LANGS),
            "source_pattern": "cc100/{lang}.txt.xz",
            "format": "paragraphs",
            "dedup": True,
            "workers": 1,
        },
    }
    return write_config(run.parent / f"{run.name}.yaml", cfg)


def test_dedup_is_counted_and_identical_across_piece_counts(tmp_path, data_corpus, tiny_tokenizer):
    planted = _paragraph_corpus(tmp_path, data_corpus, 400)
    sources = {"train": {lang: [str(tmp_path / "cc100" / f"{lang}.txt.xz")] for lang in LANGS}}
    kw = {"part_docs": 37, "fmt": "paragraphs", "dedup": True, "progress": False}
    single = preprocess(sources, tiny_tokenizer, tmp_path / "one", **kw)
    for lang in LANGS:
        e = single["languages"][lang]["train"]
        assert e["skipped"] == {"duplicate document": planted[lang]} and e["docs"] == 400
    for i in (1, 0):  # pieces out of order, then the merge
        preprocess(sources, tiny_tokenizer, tmp_path / "two", piece=(i, 2), **kw)
    assert not (tmp_path / "two" / "manifest.json").exists(), "pieces leave the merge to a full run"
    preprocess(sources, tiny_tokenizer, tmp_path / "two", **kw)
    assert _tree(tmp_path / "two") == _tree(tmp_path / "one")
    plain = preprocess(sources, tiny_tokenizer, tmp_path / "all", **{**kw, "dedup": False})
    assert plain["languages"]["en"]["train"]["docs"] == 400 + planted["en"]


def test_piece_owners_spread_units_by_bytes():
    assert piece_owners([10, 10], 3) == [[0, 1], [1, 2]]  # each unit shared by the pieces it overlaps
    assert piece_owners([100, 1, 1, 1], 4) == [[0, 1, 2, 3], [3], [3], [3]]
    assert piece_owners([0, 0, 0], 2) == [[0], [1], [0]]  # no sizes (hf: sources): round robin
    for weights, n in (([5, 0, 7, 1, 300, 2, 2, 9], 5), ([1] * 100, 64), ([3, 1], 1)):
        owners = piece_owners(weights, n)
        assert all(o and o == sorted(set(o)) and 0 <= o[0] and o[-1] < n for o in owners)
        assert set().union(*map(set, owners)) == set(range(n)) or n > sum(w > 0 for w in weights)
        # a piece reads about 1/n of the bytes: at most its share plus the two units at its ends
        for i in range(n):
            read = sum(w for w, o in zip(weights, owners, strict=True) if i in o)
            assert read <= sum(weights) / n + 2 * max(weights)


def test_normalized_hash_ignores_case_and_spacing_only():
    assert normalized_hash("Hello  World\n") == normalized_hash("hello world")
    assert normalized_hash("hello world") != normalized_hash("hello, world")


@pytest.mark.slow
def test_three_pieces_any_order_one_killed_match_one_machine(
    tmp_path, data_corpus, tiny_tokenizer, monkeypatch
):
    """The CLI contract of the SLURM data-preparation job: pieces 2, 0 (killed), 1, 0 again, then the merge."""
    corpus = tmp_path / "corpus"
    _paragraph_corpus(corpus, data_corpus, 2 * units.PART_DOCS + 500)  # 3 parts per language
    one = _config(tmp_path / "one", corpus, tiny_tokenizer)
    proc = megameta("preprocess", "--config", str(one))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = _tree(tmp_path / "one" / "shards")
    assert json.loads(ref["manifest.json"])["kind"] == "shards"

    cfg = _config(tmp_path / "many", corpus, tiny_tokenizer)
    shards = tmp_path / "many" / "shards"

    def piece(i: int) -> None:
        p = megameta("preprocess", "--config", str(cfg), "--num-shards", "3", "--shard-index", str(i))
        assert p.returncode == 0, p.stderr[-3000:]

    piece(2)
    # piece 0 (en's parts 0 and 2; en and fr are the same size, so pieces 0-1 share en, 1-2 fr) is
    # killed while it sleeps after committing en part 0
    killed = subprocess.Popen(
        [sys.executable, "-m", "megameta.cli", "preprocess", "--config", str(cfg)]
        + ["--num-shards", "3", "--shard-index", "0"],
        env=cli_env(**{units.PART_DELAY_ENV: "30"}),
        cwd=REPO,
        start_new_session=True,
    )
    first = shards / "en" / "train.parts" / "000000.idx"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    assert killed.poll() is None, "piece 0 finished before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (shards / "en" / "train.parts" / "000002.idx").exists()
    before = first.stat().st_mtime_ns
    piece(1)
    piece(0)
    assert first.stat().st_mtime_ns == before, "the rerun of piece 0 redid its finished part"
    for lang in LANGS:
        assert sorted(p.name for p in (shards / lang / "train.parts").glob("*.idx")) == [
            "000000.idx", "000001.idx", "000002.idx",
        ]  # fmt: skip

    # The merge tokenizes nothing: every part exists.
    from megameta.config import load_config
    from megameta.pipeline import ensure_shards

    def no_tokenizing(*a, **k):
        raise AssertionError("the merge tokenized a part that a piece had finished")

    monkeypatch.setattr(units, "ShardWriter", no_tokenizing)
    ensure_shards(load_config(str(cfg)))
    assert _tree(shards) == ref
    assert not list(shards.glob("*/*.parts"))


def test_bad_piece_arguments_and_workers_are_config_errors(tmp_path, data_corpus, tiny_tokenizer):
    corpus = tmp_path / "corpus"
    _paragraph_corpus(corpus, data_corpus, 10)
    cfg = _config(tmp_path / "run", corpus, tiny_tokenizer)
    for args, message in (
        (["--num-shards", "3", "--shard-index", "3"], "--shard-index 3 --num-shards 3"),
        (["--workers", "0"], "data.workers: must be >= 1"),
    ):
        proc = megameta("preprocess", "--config", str(cfg), *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
