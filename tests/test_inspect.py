"""`megameta inspect` on synthetic checkpoint and shard dirs (in-process CLI: fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import synthetic_checkpoint

from megameta.cli import main
from megameta.data.shards import MANIFEST, ShardWriter


def _inspect(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_checkpoint_dir_lists_every_checkpoint_with_its_status(tmp_path, capsys):
    root = tmp_path / "meta" / "checkpoints"
    synthetic_checkpoint(root, 2)
    synthetic_checkpoint(root, 4, data_stream={"seed": 7, "alpha": 0.3})
    (root / "step_00000002" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    code, out, _ = _inspect(capsys, tmp_path / "meta")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"checkpoints: {root} (latest -> step_00000004)"
    row2 = next(line for line in lines if line.startswith("step_00000002"))
    row4 = next(line for line in lines if line.startswith("step_00000004"))
    assert "INVALID: " in row2 and "truncated" in row2
    assert row4.split() == ["step_00000004", "meta", "4", "1,024", "2", "fp32", "ok"]
    assert 'model: {"preset": "custom", "vocab_size": 100}' in lines and "langs: en" in lines
    assert 'data stream: {"alpha": 0.3, "seed": 7}' in lines

    code, out, _ = _inspect(capsys, root / "step_00000002")  # one checkpoint: just its row
    assert code == 0 and sum(line.startswith("step_") for line in out.splitlines()) == 1


def test_not_a_checkpoint_or_missing_path_is_exit_2(tmp_path, capsys):
    code, _, err = _inspect(capsys, tmp_path)
    assert code == 2 and "neither a shard dir (manifest.json) nor a checkpoint dir" in err
    code, _, err = _inspect(capsys, tmp_path / "nope")
    assert code == 2 and "does not exist" in err


def _shards(root, kind: str | None) -> None:
    for lang, docs in (("en", [[5, 6, 7], [8, 9]]), ("fr", [[10, 11, 12, 13]])):
        writer = ShardWriter(root / lang / "train", np.uint16, eos_id=2)
        for doc in docs:
            writer.add(doc)
        writer.close()
    manifest = {"format_version": 2, "vocab_hash": "0123456789abcdef", "vocab_size": 100, "dtype": "uint16",
                "eos_id": 2, "languages": {"en": {"train": {"docs": 2, "tokens": 5}},
                                           "fr": {"train": {"docs": 1, "tokens": 4}}}}  # fmt: skip
    if kind is not None:
        manifest["kind"] = kind
    (root / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind", ["shards", None])  # None: written before manifests had a kind
def test_shard_dir_shows_counts_probabilities_and_a_sample(tmp_path, capsys, kind):
    _shards(tmp_path, kind)
    code, out, _ = _inspect(capsys, tmp_path, "--alpha", "0.5")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"shards: {tmp_path} (vocab 100, uint16, vocab hash 0123456789ab)"
    en = next(line.split() for line in lines if line.startswith("en"))
    fr = next(line.split() for line in lines if line.startswith("fr"))
    assert en[:4] == ["en", "train", "2", "5"] and float(en[4]) == pytest.approx(5 / 9, abs=1e-4)
    q_en = 5**0.5 / (5**0.5 + 4**0.5)
    assert float(en[5]) == pytest.approx(q_en, abs=1e-4) and float(fr[5]) == pytest.approx(1 - q_en, abs=1e-4)
    assert lines[-1] == "sample (en/train doc 0, first 48 tokens): [5, 6, 7]"


def test_a_corpus_manifest_is_told_apart_by_its_kind_not_its_text(tmp_path, capsys):
    # A demo-corpus manifest that mentions "vocab_hash" in a value must not be taken for shards.
    (tmp_path / MANIFEST).write_text(json.dumps({"kind": "demo-corpus", "files": {}, "note": '"vocab_hash"'}))
    code, _, err = _inspect(capsys, tmp_path)
    assert code == 2 and "'demo-corpus' manifest" in err
    (tmp_path / MANIFEST).write_text(json.dumps({"files": {"en.txt": {"vocab_hash": 1}}}))  # legacy corpus
    code, _, err = _inspect(capsys, tmp_path)
    assert code == 2 and "'demo-corpus' manifest" in err
    (tmp_path / MANIFEST).write_text("{not json")
    code, _, err = _inspect(capsys, tmp_path)
    assert code == 2 and f"{tmp_path / MANIFEST} is corrupt" in err
