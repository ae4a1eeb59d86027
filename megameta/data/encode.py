"""Batch tokenization for preprocessing: SentencePiece's C++ encoder in worker processes.

Tokenizing calls SentencePiece directly and maps its ids to the XLM-R layout of the
saved Hugging Face tokenizer (piece i -> i + 1, unknown -> ``<unk>``, see
:class:`megameta.data.tokenizer.Vocab`). It is about 8x faster per core than the
``tokenizers`` Unigram model (``bench/preprocess.py``) and is what XLM-R's own data
pipeline (fairseq's ``spm_encode``) ran.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing as mp
import queue
import signal
import threading
from collections.abc import Callable
from typing import NoReturn

import numpy as np

from megameta.data.documents import batch_documents
from megameta.data.readers import ReadStats
from megameta.data.tokenizer import Vocab
from megameta.errors import MegaMetaError

_worker_vocab: Vocab | None = None
_worker_dtype = np.dtype(np.uint16)


def _init_worker(tokenizer_dir: str, dtype: str) -> None:
    global _worker_vocab, _worker_dtype
    _worker_vocab = Vocab(tokenizer_dir)
    _worker_dtype = np.dtype(dtype)


def _encode(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize a batch: (flat ids with ``</s>`` after every document, lengths incl. separator)."""
    ids = _worker_vocab.encode(batch)  # one thread: parallelism comes from the worker processes
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    body = np.fromiter(
        itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()) - len(ids)
    )
    body = Vocab.to_ids(body)
    flat = np.full(int(lengths.sum()), Vocab.eos_token_id, dtype=_worker_dtype)
    keep = np.ones(len(flat), dtype=bool)
    keep[np.cumsum(lengths) - 1] = False
    flat[keep] = body
    return flat, lengths


def _work(job: list[str] | tuple[str, str, list[bytes]]) -> tuple[np.ndarray, np.ndarray, ReadStats | None]:
    """A batch of documents, or raw records ``(kind, text_field, records)`` read into documents here.

    Returns (flat ids, lengths, what reading the records counted, or None for documents).
    """
    if isinstance(job, list):
        return (*_encode(job), None)
    kind, text_field, records = job
    stats = ReadStats()
    return (*_encode(batch_documents(kind, records, text_field, stats)), stats)


def _serve(conn, tokenizer_dir: str, dtype: str) -> None:
    """A worker: tokenize the batches arriving on ``conn`` in order, send back each result in order.

    The main thread reads raw records and tokenizes. One thread receives batches into an inbox,
    so the parent's send never waits on this worker's send of an earlier result (no deadlock,
    whatever the pipe's buffer size); another sends the results, so the worker goes on to its
    next batch while the parent is still collecting another worker's result (sending from the
    main thread left each of 2 workers blocked 0.15 s per 120 MB). SIGINT is ignored: the
    parent handles Ctrl-C and stops the workers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _init_worker(tokenizer_dir, dtype)
        error = None
    except Exception as e:  # reported with the first result the parent asks for
        error = e
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):
                batch = None
            inbox.put(batch)
            if batch is None:
                return

    outbox: queue.SimpleQueue = queue.SimpleQueue()

    def send() -> None:
        while (reply := outbox.get()) is not None:
            try:
                conn.send(reply)
            except OSError:  # the parent is gone: nobody to report to
                return

    threading.Thread(target=receive, daemon=True).start()
    sender = threading.Thread(target=send)
    sender.start()
    while (batch := inbox.get()) is not None:
        try:
            if error:
                raise error
            reply = ("ok", _work(batch))
        except Exception as e:
            reply = ("error", MegaMetaError(f"tokenizer worker: {type(e).__name__}: {e}"))
        outbox.put(reply)
    outbox.put(None)
    sender.join()


class Tokenizers:
    """The tokenizer workers (or the in-process tokenizer for ``workers <= 1``), started on first use.

    ``submit(batch)`` returns a callable that waits for and returns :func:`_work`'s result;
    results must be collected in submission order. Batch i goes to worker ``i % workers`` over
    its own pipe and the calling thread does all the sending and receiving: no helper threads
    competing for the parent's GIL: ``multiprocessing.Pool``'s three used 0.43 s of CPU beside
    the reading thread's 0.62 s on 60 MB of JSON lines, on a 2-core machine where the reading
    process shares a core with the workers. A worker that dies raises :class:`MegaMetaError`
    naming its exit code (``Pool`` waited forever for its lost batch).
    """

    def __init__(self, tokenizer_dir: str, dtype: np.dtype, workers: int):
        self.args, self.workers = (str(tokenizer_dir), dtype.name), workers
        self.procs: list = []
        self.conns: list = []
        self.ready, self.sent, self.received = False, 0, 0

    def _start(self) -> None:
        if self.workers > 1:
            # fork (where available) skips re-importing the package in every worker; the parent
            # has started no threads that a forked child could inherit half-held.
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            # Objects the parent already holds (torch, transformers, ...) move out of the collector's
            # reach: a worker's garbage collection would otherwise write to them and copy their pages
            # (2 workers on 1 GB: peak PSS 297 MiB with this, 390-440 MiB without).
            gc.freeze()
            for _ in range(self.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, *self.args), daemon=True)
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
            gc.unfreeze()
        else:
            _init_worker(*self.args)
        self.ready = True

    def submit(self, batch: list[str] | tuple[str, str, list[bytes]]) -> Callable[[], tuple]:
        """Queue a batch of documents or of raw records (see :func:`_work`); returns its result's getter."""
        if not self.ready:
            self._start()
        if not self.procs:
            result = _work(batch)
            return lambda: result
        i = self.sent % self.workers
        self.sent += 1
        try:
            self.conns[i].send(batch)
        except OSError:
            self._died(i)
        return lambda: self._receive(i)

    def _receive(self, i: int) -> tuple:
        try:
            status, value = self.conns[i].recv()
        except (EOFError, OSError):
            self._died(i)
        self.received += 1
        if status == "error":
            raise value
        return value

    def _died(self, i: int) -> NoReturn:
        self.procs[i].join(timeout=5)
        raise MegaMetaError(
            f"tokenizer worker {i} (pid {self.procs[i].pid}) died with exit code {self.procs[i].exitcode}"
            " (a negative code is the signal that killed it, e.g. -9 when the machine ran out of"
            " memory); rerun `megameta preprocess`: finished parts are kept"
        )

    def close(self) -> None:
        """Stop the workers: an orderly end when every result was collected, at once otherwise."""
        orderly = self.received == self.sent
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self.procs:
            if not orderly:  # busy with batches nobody will collect: the run failed or was interrupted
                proc.terminate()
            proc.join()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
