"""Preprocessing: identical bytes for any worker count / part size, kill-and-rerun, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megameta.data import documents, readers, units
from megameta.data.preprocess import preprocess, summary_table
from megameta.data.shards import TokenShard
from megameta.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _shard_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.glob("*/*"))
        if p.suffix in (".bin", ".idx")
    }


def test_identical_for_part_size_batch_size_and_resumed_parts(
    tmp_path, data_corpus, tiny_tokenizer, tiny_shards, capsys, monkeypatch
):
    ref = _shard_bytes(tiny_shards)
    assert set(ref) >= {"en/train.bin", "en/train.idx", "ru/train.bin", "en/valid.idx"}
    sources = {"train": data_corpus, "valid": {"en": data_corpus["en"]}}
    out = tmp_path / "s"
    monkeypatch.setattr(units, "BATCH_CHARS", 1000)  # batches cut by size, mostly a few documents each
    preprocess(sources, tiny_tokenizer, out, part_docs=64, progress=False)
    monkeypatch.undo()
    assert _shard_bytes(out) == ref
    assert not list(out.glob("*/*.parts")), "parts are removed once the unit is done"
    # A torn unit (final .idx lost, as after a kill between the renames) is rebuilt; the rest is skipped.
    (out / "en/train.idx").unlink()
    preprocess(sources, tiny_tokenizer, out, part_docs=64, progress=True)
    assert "en/train: up to date" not in capsys.readouterr().out
    assert _shard_bytes(out) == ref
    preprocess(sources, tiny_tokenizer, out, part_docs=64, progress=True)
    assert capsys.readouterr().out.count("up to date") == 5


def test_workers_reading_records_equal_the_reading_process_reading_documents(
    tmp_path, data_corpus, tiny_tokenizer, monkeypatch
):
    """A fresh run hands raw records to the workers; runs that skip parts read documents themselves.

    Both must give the same shards and counts (a resumed or piece run finishes what a fresh
    run started), and in the fresh run the reading process must parse no record itself.
    """
    bad_txt, bad_jsonl = tmp_path / "bad.txt", tmp_path / "bad.jsonl"
    bad_txt.write_bytes(b"one\n\n \xe3\x80\x80\nbad \xff utf8\n" + b"long " * 300 + b"\nlast")
    bad_jsonl.write_bytes(b'{"text": "a"}\nnot json\n{"x": 1}\n\n{"text": "lone \\ud800"}\n{"text": "  "}\n')
    sources = {
        "train": {"en": [*data_corpus["en"], str(bad_txt)], "fr": [str(bad_jsonl), *data_corpus["fr"]]}
    }
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 512)
    monkeypatch.setattr(documents, "MAX_DOC_CHARS", 300)
    parsed_here = []
    real_record_document = readers.record_document

    def record_document(*args):
        parsed_here.append(os.getpid())  # in a forked worker this appends to the worker's own list
        return real_record_document(*args)

    monkeypatch.setattr(readers, "record_document", record_document)
    fresh = preprocess(sources, tiny_tokenizer, tmp_path / "fresh", workers=2, part_docs=40, progress=False)
    assert parsed_here == [], "the reading process parsed records that the workers should read"
    monkeypatch.setattr(units, "record_batches", lambda *a, **k: None)  # as when parts are skipped
    preprocess(sources, tiny_tokenizer, tmp_path / "itself", workers=1, part_docs=40, progress=False)
    assert parsed_here, "the reading process read the documents itself"
    assert _shard_bytes(tmp_path / "fresh") == _shard_bytes(tmp_path / "itself")
    for lang in ("en", "fr"):  # the same record, byte for byte: counts, skip reasons and their order
        done = [(tmp_path / run / lang / "train.done.json").read_text() for run in ("fresh", "itself")]
        assert done[0] == done[1]
    fr = {k: v for k, v in fresh["languages"]["fr"]["train"]["skipped"].items() if k != "long document split"}
    assert fr == {
        "empty document": 1, "empty line": 1, "invalid JSON": 1, "lone surrogate replaced": 1, "no 'text' string": 1,
    }  # fmt: skip
    en = fresh["languages"]["en"]["train"]
    assert en["replaced_utf8_lines"] == 1 and {"long line split", "long document split"} <= set(en["skipped"])


@pytest.mark.slow
def test_kill_and_rerun_is_byte_identical(tmp_path, data_corpus, tiny_tokenizer, tiny_shards):
    """SIGKILL `preprocess` (2 workers) after a few parts are committed; rerun; compare with an uninterrupted run."""
    out = tmp_path / "killed"
    sources = {"train": data_corpus, "valid": {"en": data_corpus["en"]}}
    script = (
        "import json, sys; from megameta.data.preprocess import preprocess\n"
        "if __name__ == '__main__':\n"
        f"    preprocess(json.loads(sys.argv[1]), {str(tiny_tokenizer)!r}, {str(out)!r}, workers=2, part_docs=50, progress=False)\n"
    )
    env = {**os.environ, units.PART_DELAY_ENV: "0.3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(sources)], env=env, cwd=REPO, start_new_session=True
    )
    parts = out / "en" / "train.parts"
    deadline = time.time() + 120
    while len(list(parts.glob("*.idx"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "preprocess finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_parts = sorted(p.name for p in parts.glob("*.idx"))
    assert len(done_parts) >= 3 and not (out / "en" / "train.bin").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts.glob("*")}
    # Rerun in-process with a different worker count; parts already committed must not be rewritten.
    seen = {}
    real_prepare, real_tokenize = units.Unit._prepare_parts, units.Unit._tokenize

    def prepare_spy(self, *args, **kwargs):
        finished = real_prepare(self, *args, **kwargs)
        seen[self.name] = len(finished)
        return finished

    def tokenize_spy(self, *args, **kwargs):
        written = real_tokenize(self, *args, **kwargs)
        if self.name == "en/train":  # the parts of the killed run are the same files, untouched
            before = {k: v for k, v in mtimes.items() if k.startswith("0000")}
            assert {k: (parts / k).stat().st_mtime_ns for k in before} == before
        return written

    units.Unit._prepare_parts, units.Unit._tokenize = prepare_spy, tokenize_spy
    try:
        preprocess(sources, tiny_tokenizer, out, workers=1, part_docs=50, progress=False)
    finally:
        units.Unit._prepare_parts, units.Unit._tokenize = real_prepare, real_tokenize
    assert seen["en/train"] >= 3, "the rerun redid finished parts"
    assert _shard_bytes(out) == _shard_bytes(tiny_shards)


def test_bad_input_is_counted_and_handled(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 64)
    monkeypatch.setattr(documents, "MAX_DOC_CHARS", 1500)
    txt = tmp_path / "bad.txt"
    long_line = ("é" * 100).encode()  # 200 bytes of 2-byte characters: split on character boundaries
    txt.write_bytes(b"good line one\n\n   \nbad \xff\xfe utf8 here\n" + long_line + b"\nlast\n")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(
        '{"text": "fine"}\n{"text": ""}\nnot json\n{"other": 1}\n\n{"text": "' + "word " * 400 + '"}\n'
        '{"text": "lone \\ud800 half"}\n'  # json.loads gives a lone surrogate, which SentencePiece refused
    )
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    pq_path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["from parquet", None, "  ", "again"]}), pq_path)
    m = preprocess(
        {"train": {"en": [str(txt), str(empty), str(pq_path)], "fr": [str(jsonl)]}},
        tiny_tokenizer,
        tmp_path / "out",
        progress=False,
    )
    en, fr = m["languages"]["en"]["train"], m["languages"]["fr"]["train"]
    assert en["replaced_utf8_lines"] == 1
    assert en["skipped"] == {"empty line": 2, "long line split": 3, "empty file": 1, "empty document": 2}
    # good, bad-utf8, 4 pieces of the long line, last, 2 parquet rows
    assert en["docs"] == 9
    assert fr["skipped"] == {
        "empty document": 1, "invalid JSON": 1, "no 'text' string": 1, "empty line": 1, "long document split": 1,
        "lone surrogate replaced": 1,
    }  # fmt: skip
    assert fr["docs"] == 4  # "fine" + the 2000-char document split in two pieces + the repaired one
    shard = TokenShard(tmp_path / "out" / "en" / "train")
    assert shard.n_docs == 9
    piece_text = "".join(
        __import__("megameta.data.tokenizer", fromlist=["x"])
        .load_tokenizer(tiny_tokenizer)
        .decode(shard.doc(d))
        for d in range(2, 6)
    )
    assert piece_text.replace(" ", "") == "é" * 100
    table = summary_table(m)
    assert "1 lines with invalid UTF-8 (replaced)" in table and "3 long line split" in table


def test_json_line_too_long_is_skipped(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(readers, "MAX_JSON_LINE_BYTES", 100)
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "' + "x" * 500 + '"}\n{"text": "short"}\n')
    m = preprocess({"train": {"en": [str(path)]}}, tiny_tokenizer, tmp_path / "o", progress=False)
    e = m["languages"]["en"]["train"]
    assert e["skipped"] == {"JSON line too long": 1} and e["docs"] == 1


@pytest.mark.parametrize("kind", ["missing", "directory", "format", "hf_path"])
def test_unreadable_source_is_exit_code_2_naming_the_path(tmp_path, tiny_tokenizer, kind):
    bad = {
        "missing": str(tmp_path / "nope.jsonl"),
        "directory": str(tmp_path),
        "format": str(tmp_path / "x.csv"),
        "hf_path": f"hf:{tmp_path}/no_such_dataset",
    }[kind]
    if kind == "format":
        Path(bad).write_text("a,b\n")
    with pytest.raises(InputError) as e:
        preprocess({"train": {"en": [bad]}}, tiny_tokenizer, tmp_path / "o", progress=False)
    assert e.value.exit_code == 2
    assert bad.removeprefix("hf:") in str(e.value)
    assert not (tmp_path / "o").exists(), "nothing is written before inputs are checked"


def test_hf_dataset_saved_to_disk(tmp_path, tiny_tokenizer, tiny_shards, data_corpus):
    import datasets

    texts = [json.loads(line)["text"] for line in open(data_corpus["ru"][0], encoding="utf-8")]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    preprocess({"train": {"ru": [f"hf:{tmp_path / 'ds'}"]}}, tiny_tokenizer, tmp_path / "o", progress=False)
    a = (tmp_path / "o/ru/train.bin").read_bytes()
    assert a == (tiny_shards / "ru/train.bin").read_bytes()
    assert np.asarray(TokenShard(tmp_path / "o/ru/train").offsets)[-1] > 0


def test_ids_match_the_hf_tokenizer_and_special_token_text_stays_text(tmp_path, tiny_tokenizer, data_corpus):
    from megameta.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer)
    docs = [json.loads(line)["text"] for line in Path(data_corpus["fr"][0]).read_text().splitlines()]
    src = tmp_path / "fr.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs + ["a <mask> b"]))
    preprocess({"train": {"fr": [str(src)]}}, tiny_tokenizer, tmp_path / "o", progress=False)
    shard = TokenShard(tmp_path / "o" / "fr" / "train")
    assert shard.n_docs == len(docs) + 1
    for d, text in enumerate(docs):
        assert list(shard.doc(d)) == tok(text, add_special_tokens=False)["input_ids"], text
    last = list(shard.doc(len(docs)))
    assert tok.mask_token_id not in last and "mask" in tok.decode(last)  # "<" and ">" are <unk> here


def test_tokenizer_with_another_id_layout_is_refused(tmp_path, tiny_tokenizer, data_corpus):
    import shutil

    from megameta.data.tokenizer import SPM_FILE, train_tokenizer

    other = tmp_path / "other"
    train_tokenizer({"en": data_corpus["en"]}, other, vocab_size=120, max_sentences=500)
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_tokenizer, mixed)
    shutil.copy(other / SPM_FILE, mixed / SPM_FILE)  # HF files of one vocabulary, model of another
    with pytest.raises(InputError, match="id layout"):
        preprocess({"train": {"en": data_corpus["en"]}}, mixed, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
