"""Readers: compressed streams read like their uncompressed twins, CC-100's paragraph layout, bad streams."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
from pathlib import Path

import pytest
import zstandard

from megameta.data import readers
from megameta.data.readers import ReadStats, iter_documents
from megameta.errors import InputError

COMPRESS = {
    ".gz": lambda b: gzip.compress(b, compresslevel=1),
    ".xz": lambda b: lzma.compress(b, preset=0),
    ".bz2": bz2.compress,
    ".zst": lambda b: zstandard.ZstdCompressor(level=3).compress(b),
}


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = "alpha beta gamma delta été naïve ёлка 東京 ünïcode".split()
    return [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(n)]


def _write_twins(tmp_path: Path, name: str, raw: bytes, codec: str) -> tuple[str, str]:
    plain = tmp_path / name
    plain.write_bytes(raw)
    packed = tmp_path / (name + codec)
    packed.write_bytes(COMPRESS[codec](raw))
    return str(plain), str(packed)


def _read(source: str, fmt: str = "lines") -> tuple[list[str], ReadStats]:
    stats = ReadStats()
    return list(iter_documents(source, "text", stats, fmt)), stats


@pytest.mark.parametrize("codec", sorted(COMPRESS))
def test_compressed_text_and_json_lines_read_as_their_uncompressed_twins(tmp_path, codec):
    docs = _docs(3000)
    text = ("\n".join(docs) + "\n\n  \nbad \xff bytes\n").encode("utf-8", errors="surrogateescape")
    text = text.replace("\xff".encode(), b"\xff")
    plain, packed = _write_twins(tmp_path, "a.txt", text, codec)
    (got_plain, s_plain), (got_packed, s_packed) = _read(plain), _read(packed)
    assert got_packed == got_plain and len(got_plain) == len(docs) + 1
    assert (s_packed.docs, s_packed.bytes, s_packed.skipped, s_packed.replaced_utf8) == (
        s_plain.docs, s_plain.bytes, s_plain.skipped, s_plain.replaced_utf8,
    )  # fmt: skip
    jsonl = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode()
    plain, packed = _write_twins(tmp_path, "b.jsonl", jsonl, codec)
    assert _read(packed)[0] == _read(plain)[0] == docs


def test_cc100_layout_xz_yields_exactly_its_documents(tmp_path):
    rng = random.Random(1)
    paras = _docs(5000, seed=2)
    documents, i = [], 0
    while i < len(paras):
        k = rng.randint(1, 6)
        documents.append(paras[i : i + k])
        i += k
    # CC-100: one paragraph per line, a blank line after every document (extra blank lines tolerated)
    raw = "".join("\n".join(d) + "\n\n" + ("\n" if j % 97 == 0 else "") for j, d in enumerate(documents))
    path = tmp_path / "sw.txt.xz"
    path.write_bytes(lzma.compress(raw.encode()))
    got, stats = _read(str(path), "paragraphs")
    assert len(got) == len(documents) == stats.docs
    assert got == ["\n".join(d) for d in documents]
    # the same file read one document per line gives the paragraphs instead
    assert len(_read(str(path), "lines")[0]) == len(paras)


def test_paragraph_document_without_blank_lines_is_cut_between_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_PARAGRAPH_DOC_BYTES", 100)
    path = tmp_path / "p.txt"
    path.write_text("".join(f"line number {i:04d}\n" for i in range(40)) + "\nlast doc\n")
    got, stats = _read(str(path), "paragraphs")
    assert "".join(got[:-1]).replace("\n", "") == "".join(f"line number {i:04d}" for i in range(40))
    assert all(len(d.encode()) < 100 + 20 for d in got) and got[-1] == "last doc"
    assert stats.skipped["long document cut"] == len(got) - 2


@pytest.mark.parametrize("codec", sorted(COMPRESS))
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_stream_is_an_input_error_naming_file_and_offset(tmp_path, codec, damage):
    raw = ("\n".join(_docs(20000, seed=3)) + "\n").encode()
    blob = COMPRESS[codec](raw)
    mid = len(blob) // 2
    if damage == "truncated":
        blob = blob[:mid]
    else:  # flip bits in a run of bytes in the middle of the stream
        blob = blob[:mid] + bytes(b ^ 0x5A for b in blob[mid : mid + 64]) + blob[mid + 64 :]
    path = tmp_path / ("d.txt" + codec)
    path.write_bytes(blob)
    with pytest.raises(InputError) as e:
        _read(str(path))
    msg = str(e.value)
    assert e.value.exit_code == 2
    assert str(path) in msg and "compressed byte" in msg and f"of {len(blob):,}" in msg
    # the offset points into the file, near the damage (codecs read ahead by at most a buffer)
    offset = int(msg.split("compressed byte ")[1].split(" ")[0].replace(",", ""))
    assert 0 < offset <= len(blob)
    if damage == "truncated":
        assert "truncated" in msg


def test_compressed_parquet_and_unknown_inner_format_are_refused(tmp_path):
    for name in ("a.parquet.gz", "a.csv.xz"):
        (tmp_path / name).write_bytes(gzip.compress(b"x"))
        with pytest.raises(InputError, match="unknown corpus format"):
            readers.check_source(str(tmp_path / name))


# JSON lines at the edges of what the two parsers accept: orjson refuses NaN, Infinity, 1e400,
# lone surrogate escapes and invalid UTF-8, which the standard library reads (the last with U+FFFD).
EDGE_JSON_LINES = [
    b'{"text": "plain", "n": 123456789012345678901234567890}',
    b'{"text": "nan field", "x": NaN}',
    b'{"text": "inf field", "x": Infinity, "y": 1e400}',
    b'{"text": "lone \\ud800 surrogate"}',
    b'{"text": "emoji \\ud83d\\ude00 pair"}',
    b'{"text": "bad \xff byte"}',
    b'{"text": "first", "text": "last wins"}',
    b'{"t\\u0065xt": "escaped key"}',
    b'{"text": "nul \\u0000 char"}',
    b'{"text": "raw control \x01 char"}',
    b'{"text": "trailing comma",}',
    b'\xef\xbb\xbf{"text": "byte order mark"}',
    b'  {"text": "spaces and CR"}  \r',
    b'{"text": "two"} {"text": "objects"}',
    b'["not", "an", "object"]',
    b'{"text": 12}',
    b'{"text": "   "}',
]


def test_json_lines_read_the_same_with_and_without_orjson(tmp_path, monkeypatch):
    if readers.orjson is None:
        pytest.skip("orjson is not installed: the standard library parses every line")
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\n".join(EDGE_JSON_LINES) + b"\n")
    fast_docs, fast = _read(str(path))
    monkeypatch.setattr(readers, "orjson", None)
    slow_docs, slow = _read(str(path))
    assert fast_docs == slow_docs
    assert (fast.docs, fast.bytes, fast.skipped, fast.replaced_utf8) == (
        slow.docs, slow.bytes, slow.skipped, slow.replaced_utf8,
    )  # fmt: skip
    assert "lone \ufffd surrogate" in fast_docs and "bad \ufffd byte" in fast_docs and fast.replaced_utf8 == 1
    assert "emoji \U0001f600 pair" in fast_docs  # a valid surrogate pair is one character, kept
    assert fast.skipped == {
        "invalid JSON": 4, "no 'text' string": 2, "empty document": 1, "lone surrogate replaced": 1,
    }  # fmt: skip
