"""Fault injection for the reliability suite, driven by the ``MEGAMETA_FAULT`` environment variable.

Format: comma-separated ``KIND@WHERE:STEP[:RANK]``, e.g. ``sigterm@backward:3:0`` or
``hang@forward:4:1``. KIND is sigterm, sigusr1, sigkill (a real signal sent to this
process), hang (sleep forever, as a wedged rank does), or nan / spike (this rank's
micro-batch losses of step STEP become NaN / 1000 times larger, for the divergence
guard; only with WHERE forward). WHERE is forward, backward (inside optimizer step
STEP, 1-based) or save (after this rank wrote its checkpoint files for step STEP,
before the checkpoint is finalized). Without RANK every rank fires. Unset in normal
runs: then every hook is a no-op.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from megameta.errors import ConfigError

KINDS = {
    "sigterm": signal.SIGTERM,
    "sigusr1": signal.SIGUSR1,
    "sigkill": signal.SIGKILL,
    "hang": None,
    "nan": None,
    "spike": None,
}
LOSS_KINDS = {"nan": float("nan"), "spike": 1000.0}  # what the loss is multiplied by
WHERE = ("forward", "backward", "save")


@dataclass(frozen=True)
class Fault:
    kind: str
    where: str
    step: int
    rank: int | None


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            kind, rest = item.split("@", 1)
            parts = rest.split(":")
            where, step = parts[0], int(parts[1])
            rank = int(parts[2]) if len(parts) > 2 else None
        except (ValueError, IndexError):
            raise ConfigError(
                f"MEGAMETA_FAULT: cannot parse {item!r} (expected KIND@WHERE:STEP[:RANK])"
            ) from None
        if kind not in KINDS or where not in WHERE or (kind in LOSS_KINDS and where != "forward"):
            raise ConfigError(
                f"MEGAMETA_FAULT: {item!r}: kind must be one of {', '.join(KINDS)}, where one of {', '.join(WHERE)} "
                f"(nan and spike only at forward)"
            )
        faults.append(Fault(kind, where, step, rank))
    return faults


class FaultInjector:
    def __init__(self, rank: int):
        self.rank = rank
        self.faults = parse(os.environ.get("MEGAMETA_FAULT", ""))
        self.spent: set[Fault] = set()  # loss faults already injected (see end_step)
        self.spent_now: set[Fault] = set()

    def __call__(self, where: str, step: int) -> None:
        for f in self.faults:
            if f.kind in LOSS_KINDS or (f.where, f.step) != (where, step) or f.rank not in (None, self.rank):
                continue
            print(f"[fault] rank {self.rank}: injecting {f.kind} at {where} of step {step}", flush=True)
            if f.kind == "hang":
                while True:
                    time.sleep(3600)
            os.kill(os.getpid(), KINDS[f.kind])

    def corrupt_loss(self, loss, step: int):
        """``loss`` as a ``nan@forward`` / ``spike@forward`` fault for optimizer step ``step`` makes it."""
        for f in self.faults:
            if (
                f.kind in LOSS_KINDS
                and f.step == step
                and f.rank in (None, self.rank)
                and f not in self.spent
            ):
                print(
                    f"[fault] rank {self.rank}: injecting {f.kind} into the loss of step {step}", flush=True
                )
                self.spent_now.add(f)
                return loss * LOSS_KINDS[f.kind]
        return loss

    def end_step(self) -> None:
        """A loss fault corrupts every micro-batch of its step, once: like a bad data window, it does not
        come back when the divergence guard rolls back and replays that step number on other data."""
        self.spent |= self.spent_now
        self.spent_now = set()
