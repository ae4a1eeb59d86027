"""Bad corpora through the real CLI: handled as documented (docs/data.md) or exit 2 naming the file."""

from __future__ import annotations

import os
import resource
import shutil

import pytest
import yaml
from helpers import megameta, tiny_config, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def run(prepared, tmp_path):
    """A run dir with its own copy of the tiny tokenizer and shards, and its config path."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(prepared["run"] / "tokenizer", run / "tokenizer")
    shutil.copytree(prepared["run"] / "shards", run / "shards")
    cfg = tiny_config(run, prepared["corpus"])
    return run, cfg, write_config(tmp_path / "c.yaml", cfg)


def test_binary_garbage_and_a_1gb_line_are_read_without_crash(run, tmp_path):
    run_dir, cfg, _ = run
    garbage = tmp_path / "garbage.txt"
    garbage.write_bytes(os.urandom(3 << 20))
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:  # one 1 GiB line: a few words, then whitespace (read in bounded pieces)
        f.write(b"the river and the city ")
        block = b" " * (1 << 24)
        for _ in range(64):
            f.write(block)
        f.write(b" the end\n")
    cfg["data"]["sources"] = {"en": [str(garbage), str(huge)]}
    cfg["data"]["valid_sources"] = {}
    cfg["phases"] = [{"name": "meta", "langs": ["en"], "steps": 1}]
    cfg["baseline"] = []
    shutil.rmtree(run_dir / "shards")
    path = write_config(tmp_path / "bad.yaml", cfg)
    proc = megameta("preprocess", "--config", str(path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # ru_maxrss of waited-for children (KiB on Linux): the 1 GiB line never sits in memory
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 2 * 1024 * 1024
    manifest = yaml.safe_load((run_dir / "shards" / "manifest.json").read_text())
    entry = manifest["languages"]["en"]["train"]
    assert entry["replaced_utf8_lines"] > 0  # garbage decoded with replacement characters, counted
    assert entry["skipped"].get("long line split", 0) >= 1024  # the 1 GiB line, in 1 MiB pieces
    assert "lines with invalid UTF-8 (replaced)" in proc.stdout


def test_language_in_config_but_not_on_disk_is_exit_2(run):
    run_dir, _, path = run
    shutil.rmtree(run_dir / "shards" / "ru")
    proc = megameta("train", "--config", str(path), "--phase", "xlingual", "phases[1].init_from=null")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{run_dir / 'shards' / 'ru' / 'train'}" in proc.stderr.strip().splitlines()[-1]


def test_shards_from_another_vocabulary_are_refused(run, tmp_path, prepared):
    from megameta.data.tokenizer import SPM_FILE, train_tokenizer

    run_dir, _, path = run
    other = tmp_path / "other"
    train_tokenizer({"en": [str(prepared["corpus"] / "wiki" / "en" / "train.jsonl")]}, other, vocab_size=120)
    shutil.copy(other / SPM_FILE, run_dir / "tokenizer" / SPM_FILE)  # the shards keep the first vocabulary
    proc = megameta("train", "--config", str(path), "--phase", "meta")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "manifest.json: shards were made with vocabulary" in last and "rerun `megameta preprocess`" in last


def test_corrupt_sentencepiece_model_is_exit_2_naming_it(run):
    run_dir, _, path = run
    model = run_dir / "tokenizer" / "sentencepiece.bpe.model"
    model.write_bytes(model.read_bytes()[:100])
    proc = megameta("train", "--config", str(path), "--phase", "meta")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"{model}: not a SentencePiece model" in last and "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage", ["truncated .bin", "truncated .idx", ".idx past the end of .bin"])
def test_damaged_shards_are_exit_2_naming_the_file(run, damage):
    run_dir, _, path = run
    base = run_dir / "shards" / "en" / "train"
    target = base.with_suffix(".idx" if damage == "truncated .idx" else ".bin")
    data = target.read_bytes()
    if damage == ".idx past the end of .bin":
        data = data[: len(data) - 2 * 64]  # drop the tail of .bin: the index now points past its end
    else:
        data = data[: len(data) - 3]
    target.write_bytes(data)
    proc = megameta("train", "--config", str(path), "--phase", "meta")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert "en/train." in last


@pytest.mark.parametrize("codec", [".xz", ".zst"])
def test_truncated_compressed_corpus_is_exit_2_naming_file_and_offset(run, tmp_path, codec):
    import lzma

    import zstandard

    run_dir, cfg, _ = run
    text = "".join(f"document {i} about the river and the city\n" for i in range(200_000)).encode()
    blob = lzma.compress(text, preset=0) if codec == ".xz" else zstandard.ZstdCompressor().compress(text)
    bad = tmp_path / f"en.txt{codec}"
    bad.write_bytes(blob[: len(blob) * 2 // 3])
    cfg["data"]["sources"] = {"en": [str(bad)]}
    cfg["data"]["valid_sources"] = {}
    cfg["phases"] = [{"name": "meta", "langs": ["en"], "steps": 1}]
    cfg["baseline"] = []
    shutil.rmtree(run_dir / "shards")
    proc = megameta("preprocess", "--config", str(write_config(tmp_path / "bad.yaml", cfg)))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(bad) in last and "truncated" in last and "compressed byte" in last
