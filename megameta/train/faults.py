"""Fault injection for the reliability suite, driven by the ``MEGAMETA_FAULT`` environment variable.

Format: comma-separated ``KIND@WHERE:STEP[:RANK]``, e.g. ``sigterm@backward:3:0`` or
``hang@forward:4:1``. KIND is sigterm, sigusr1, sigkill (a real signal sent to this
process) or hang (sleep forever, as a wedged rank does). WHERE is forward, backward
(inside optimizer step STEP, 1-based) or save (after this rank wrote its checkpoint
files for step STEP, before the checkpoint is finalized). Without RANK every rank
fires. Unset in normal runs: then every hook is a no-op.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from megameta.errors import ConfigError

KINDS = {"sigterm": signal.SIGTERM, "sigusr1": signal.SIGUSR1, "sigkill": signal.SIGKILL, "hang": None}
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
        if kind not in KINDS or where not in WHERE:
            raise ConfigError(
                f"MEGAMETA_FAULT: {item!r}: kind must be one of {', '.join(KINDS)}, where one of {', '.join(WHERE)}"
            )
        faults.append(Fault(kind, where, step, rank))
    return faults


class FaultInjector:
    def __init__(self, rank: int):
        self.rank = rank
        self.faults = parse(os.environ.get("MEGAMETA_FAULT", ""))

    def __call__(self, where: str, step: int) -> None:
        for f in self.faults:
            if f.where == where and f.step == step and f.rank in (None, self.rank):
                print(f"[fault] rank {self.rank}: injecting {f.kind} at {where} of step {step}", flush=True)
                if f.kind == "hang":
                    while True:
                        time.sleep(3600)
                os.kill(os.getpid(), KINDS[f.kind])
