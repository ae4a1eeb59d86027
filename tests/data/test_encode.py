"""Tokenizer workers: in-order results equal to the in-process tokenizer, clear errors, no hangs."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from megameta.data.encode import Tokenizers
from megameta.errors import MegaMetaError


def _batches(n: int) -> list:
    """Batches of documents, and every third one raw records (JSON lines or text) that the workers read."""
    batches = []
    for i in range(n):
        docs = [f"document {i} line {j} " * (1 + (i * 7 + j) % 5) for j in range(1 + i % 4)]
        if i % 6 == 2:
            lines = [json.dumps({"text": d}).encode() + b"\n" for d in docs] + [
                b"not json\n",
                b'{"text": 1}\n',
            ]
            batches.append(("json", "text", lines))
        elif i % 6 == 5:
            batches.append(("text", "text", [d.encode() + b"\n" for d in docs] + [b"  \xe3\x80\x80 \n"]))
        else:
            batches.append(docs)
    return batches


def test_workers_return_in_order_what_one_process_returns(tiny_tokenizer):
    batches = _batches(17)
    one = Tokenizers(str(tiny_tokenizer), np.dtype(np.uint16), 1)
    want = [one.submit(b)() for b in batches]
    pool = Tokenizers(str(tiny_tokenizer), np.dtype(np.uint16), 3)
    try:
        # Several batches in flight per worker before any result is collected, as preprocessing does.
        window = [pool.submit(b) for b in batches[:7]]
        got = [window.pop(0)() for _ in range(2)]
        window += [pool.submit(b) for b in batches[7:]]
        got += [get() for get in window]
        procs = list(pool.procs)
    finally:
        pool.close()
    assert len(procs) == 3 and [p.exitcode for p in procs] == [0, 0, 0], "an orderly close ends every worker"
    assert len(got) == len(want)
    for (flat, lengths, counted), (flat_1, lengths_1, counted_1) in zip(got, want, strict=True):
        np.testing.assert_array_equal(flat, flat_1)
        np.testing.assert_array_equal(lengths, lengths_1)
        assert counted == counted_1
    json_stats, text_stats = want[2][2], want[5][2]
    assert json_stats.docs == 3 and json_stats.skipped == {"invalid JSON": 1, "no 'text' string": 1}
    assert text_stats.docs == 2 and text_stats.skipped == {"empty document": 1}  # U+3000 only
    assert want[0][2] is None and len(want[2][1]) == 3  # documents count nothing; 3 documents read


def test_a_killed_worker_is_an_error_naming_its_exit_code(tiny_tokenizer):
    pool = Tokenizers(str(tiny_tokenizer), np.dtype(np.uint16), 2)
    try:
        pool.submit(["warm up"])()
        os.kill(pool.procs[1].pid, signal.SIGKILL)
        pool.procs[1].join()
        with pytest.raises(MegaMetaError, match=r"tokenizer worker 1 \(pid \d+\) died with exit code -9"):
            pool.submit(["goes to worker 1"])()  # fails on sending or on receiving, whichever comes first
    finally:
        pool.close()  # uncollected results: stops the live worker at once instead of waiting for it


def test_an_error_inside_a_worker_reaches_the_caller(tiny_tokenizer):
    pool = Tokenizers(str(tiny_tokenizer), np.dtype(np.uint16), 2)
    try:
        bad = pool.submit(["fine", 12345])  # SentencePiece refuses a non-string
        with pytest.raises(MegaMetaError, match="tokenizer worker: TypeError"):
            bad()
        want = Tokenizers(str(tiny_tokenizer), np.dtype(np.uint16), 1).submit(["still serving"])()[0]
        for get in [pool.submit(["still serving"]) for _ in range(2)]:  # one batch to each worker
            np.testing.assert_array_equal(get()[0], want)
    finally:
        pool.close()
