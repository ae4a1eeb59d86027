"""Learning-rate schedules: linear warm-up, then linear, cosine or constant decay.

A registry (name -> builder) because users swap schedules; the error lists the valid names.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from megameta.errors import ConfigError


def _linear(progress: float) -> float:
    return 1.0 - progress


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _constant(progress: float) -> float:
    return 1.0


SCHEDULES: dict[str, Callable[[float], float]] = {"linear": _linear, "cosine": _cosine, "constant": _constant}


def lr_lambda(
    name: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> Callable[[int], float]:
    """Multiplier of the peak lr at scheduler step ``s`` (0-based), for ``torch.optim.lr_scheduler.LambdaLR``.

    Warm-up rises linearly to 1 at ``warmup_steps``; the decay then goes from 1 to ``min_ratio`` at ``total_steps``.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"optim.schedule: unknown schedule {name!r} (valid: {', '.join(SCHEDULES)})")
    decay = SCHEDULES[name]
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * decay(progress)

    return fn
