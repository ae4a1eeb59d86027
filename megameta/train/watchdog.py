"""Liveness of a training job: per-rank heartbeats, a watchdog thread, and the stuck-rank report.

Backends differ in whether they time out a stuck collective at all (DeepSpeed's CPU shared-memory
all-reduce spins forever), so each rank records how far it got in a heartbeat file, and a thread
fails the rank when a step makes no progress for ``train.dist_timeout_s``. The report that names
the rank that stopped is a pure function of the heartbeats (:func:`stuck_rank_report`).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import torch.distributed as dist

from megameta.layout import PhaseLayout

#: Points of a training step a heartbeat records, in order.
POINTS = ("forward", "backward", "sync")

#: (step, micro-batch, index into POINTS); (-1, -1, -1) when a rank's heartbeat is unreadable.
Progress = tuple[int, int, int]
UNKNOWN: Progress = (-1, -1, -1)


def stuck_rank_report(progress: dict[int, Progress]) -> str:
    """Which ranks are behind the furthest one, and where each stopped.

    A rank that never wrote a heartbeat (``UNKNOWN``) counts as behind everyone.
    """
    furthest = max(progress.values())
    behind = sorted(r for r, p in progress.items() if p < furthest)
    if not behind:
        return "every rank reached the same point (a peer process died or the network failed)"
    parts = []
    for r in behind:
        step, _, point = progress[r]
        parts.append(
            f"rank {r} stopped in step {step} ({POINTS[point]})" if step >= 0 else f"rank {r} never started"
        )
    return ", ".join(parts)


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from the process group (a dead peer, a timeout, a broken link).

    Out-of-memory errors, shape bugs and the like are not: they keep their own traceback.
    """
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        key in text
        for key in ("gloo", "nccl", "connection reset", "connection closed", "timed out", "broken pipe")
    )


class Heartbeat:
    """This rank's progress file, and the watchdog that fails the rank when it stops moving."""

    def __init__(self, layout: PhaseLayout, rank: int, world: int, timeout_s: int):
        self.layout, self.rank, self.world, self.timeout = layout, rank, world, timeout_s
        self.path = layout.heartbeat(rank)
        self.step = 0
        self.in_step = False
        self.progress_at = time.time()

    def enter_step(self, step: int) -> None:
        """Optimizer step ``step`` (1-based) begins: the watchdog's clock starts."""
        self.step, self.in_step, self.progress_at = step, True, time.time()

    def beat(self, micro: int, point: str) -> None:
        """Record that this rank reached ``point`` of micro-batch ``micro`` in the current step."""
        if micro == 0 and point == "forward":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{self.step} {micro} {POINTS.index(point)} {time.time():.0f}\n")
        self.progress_at = time.time()

    def leave_step(self) -> None:
        self.in_step = False

    def read_all(self) -> dict[int, Progress]:
        progress = {}
        for r in range(self.world):
            try:
                fields = self.layout.heartbeat(r).read_text().split()
                progress[r] = (int(fields[0]), int(fields[1]), int(fields[2]))
            except (OSError, ValueError, IndexError):
                progress[r] = UNKNOWN
        return progress

    def failure_message(self, error: BaseException) -> str:
        """The collective-failure report: this rank, its step, and which ranks are behind."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (
            f"collective failed on rank {self.rank} in step {self.step} after up to "
            f"train.dist_timeout_s={self.timeout}s: {stuck_rank_report(self.read_all())} [{first}]"
        )

    def start_watchdog(self) -> None:
        threading.Thread(target=self._watch, daemon=True, name="megameta-watchdog").start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(5.0, self.timeout / 4))
            if self.in_step and time.time() - self.progress_at > self.timeout:
                msg = self.failure_message(TimeoutError(f"no progress for {self.timeout}s"))
                print(f"megameta train: error: {msg}", file=sys.stderr, flush=True)
                os._exit(1)
