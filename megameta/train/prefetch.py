"""The input pipeline ahead of the step: this rank's micro-batches built in a background thread.

:func:`rank_batches` is the order in which a rank consumes the global sample stream (a pure
function of the data state, one integer: the samples seen); :class:`Prefetcher` runs any such
iterator ``depth`` items ahead in a daemon thread, so that packing and masking (numpy, which
releases the GIL for its array work) overlap the step. On CUDA the batches are put in pinned
memory there, and the step copies them with ``non_blocking=True``. Exact resume is unchanged:
what is built ahead but not consumed is dropped, and a resumed run starts the iterator at the
checkpoint's sample count.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch

_DONE = object()


class Prefetcher:
    """Iterates ``source`` in a background thread, at most ``depth`` items ahead (``depth`` >= 1).

    Items come out in ``source``'s order; an exception raised by ``source`` is re-raised by
    ``next()`` at its place in the order. :meth:`close` stops the thread (it is a daemon, so an
    unclosed prefetcher does not keep the process alive either).
    """

    def __init__(self, source: Iterator, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._fill, args=(source,), daemon=True, name="megameta-prefetch"
        )
        self._thread.start()

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put((item, None)):
                    return
        except BaseException as error:  # handed to the consumer, raised there with its traceback
            self._put((None, error))
            return
        self._put((_DONE, None))

    def _put(self, entry) -> bool:
        # A bounded put that notices close(): the consumer may never take another item.
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        item, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        if item is _DONE:
            self._queue.put((_DONE, None))  # stays exhausted
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread and drop what it built ahead; idempotent."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)


def rank_batches(stream, first_sample: int, position: Callable[[int], int], rank: int, world: int,
                 micro_batch: int, grad_accum: int, pin: bool = False) -> Iterator[tuple[np.ndarray, dict]]:  # fmt: skip
    """(global sample indices, batch) of each micro-step of ``rank``, for the optimizer steps from
    global sample ``first_sample`` (a multiple of the global batch) on, without end.

    Micro-step m of the step starting at sample s reads ``[s + (m * world + rank) * micro_batch, +micro_batch)``:
    the stream is the same for any world size. The next step starts at ``position(s + global batch)``
    (the divergence guard's jump over a data window it skipped). ``pin``: tensors in pinned memory.
    """
    global_batch = micro_batch * grad_accum * world
    step_start = first_sample
    while True:
        for micro in range(grad_accum):
            start = step_start + (micro * world + rank) * micro_batch
            indices = np.arange(start, start + micro_batch, dtype=np.int64)
            batch = stream.batch(indices)
            if pin:
                batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            yield indices, batch
        step_start = position(step_start + global_batch)


def model_inputs(batch: dict, device: torch.device) -> dict[str, torch.Tensor | None]:
    """The model's keyword arguments for ``batch``, copied to ``device`` without waiting for the copy.

    Whether the batch is padded is a host fact: unpadded batches pass no mask (SDPA may then use
    its flash kernel), padded ones the bool [B, 1, 1, T] SDPA mask, which the model uses as given.
    """
    inputs = {k: batch[k].to(device, non_blocking=True) for k in ("input_ids", "labels", "masked_index")}
    mask = batch["attention_mask"].to(device, non_blocking=True) if batch["padded"] else None
    return {**inputs, "attention_mask": None if mask is None else mask.bool()[:, None, None, :]}
