"""Divergence guard: a bad optimizer step is caught on every rank at once, skipped, and after K in a row
the run rolls back to the last good checkpoint and jumps over the data window that caused it.

A step is bad when the global mean loss is non-finite, when it exceeds ``spike_factor`` times the median
of the last ``spike_window`` good steps' losses, or when the global gradient norm DeepSpeed computes in
``engine.step()`` is non-finite. Cost: the trainer passes each micro-batch loss through :meth:`watch`
(a device-side add, no host sync); at the gradient-accumulation boundary :meth:`step` all-reduces one
float (the sum of the ranks' micro-batch losses) and reads it on the host: one tiny collective and one
sync per optimizer step. Every rank sees the same reduced loss and the same (already all-reduced) grad
norm, so every rank reaches the same verdict without another collective.

Skipping leaves the optimizer state untouched in every precision and ZeRO stage: for that step the
inner torch optimizer's ``step()`` (Adam moments, step count, fp32 master weights) does nothing and the
lr scheduler does not advance, while DeepSpeed still reduces and clears the gradients and re-copies the unchanged
fp32 master weights into the model. The guard marks the DeepSpeed optimizer's ``overflow`` flag, so the
engine counts the step as skipped exactly as it does for an fp16 loss-scale overflow (which the fp16 loss
scaler keeps skipping on its own). DeepSpeed itself skips a non-finite gradient norm for ZeRO-3, ZeRO-1/2
fp32 and ZeRO-0 bf16, but not for ZeRO-1/2 bf16 or ZeRO-0 fp32: the guard covers all of them.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from megameta.errors import ConfigError, MegaMetaError


@dataclass
class GuardConfig:
    """``train.guard``: the divergence guard (see :mod:`megameta.train.guard`)."""

    enabled: bool = True
    """Check every optimizer step (one all-reduce of one float per step); false = steps are never skipped."""
    spike_factor: float = 4.0
    """A step whose mean loss exceeds this multiple of the running median is a spike (0 = no spike check)."""
    spike_window: int = 50
    """Good steps in the running median; the spike check starts once the window is full."""
    max_bad_steps: int = 3
    """K: after this many bad steps in a row, roll back to the last checkpoint written before the first of
    them and skip their data window (0 = never roll back, only skip)."""
    max_rollbacks: int = 5
    """Give up (exit 1, naming the steps) when the run diverges again after this many rollbacks."""

    def validate(self, path: str) -> None:
        if not (self.spike_factor == 0 or self.spike_factor > 1):
            raise ConfigError(f"{path}.spike_factor: must be 0 (off) or > 1, got {self.spike_factor}")
        if self.spike_window < 1:
            raise ConfigError(f"{path}.spike_window: must be >= 1, got {self.spike_window}")
        for name in ("max_bad_steps", "max_rollbacks"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")


class DivergenceGuard:
    """Watches one engine's optimizer steps. Collective: every rank calls :meth:`step` at every micro-batch.

    State that survives checkpoints (:meth:`state_dict`): ``skipped_steps``, ``rollbacks`` and
    ``skipped_samples``, the ``[start, end)`` global sample ranges the data stream jumps over.
    """

    def __init__(self, cfg: GuardConfig, engine, fault, log: Callable[[str], None]):
        self.cfg, self.engine, self.fault, self.log = cfg, engine, fault, log
        self.losses: deque[float] = deque(maxlen=cfg.spike_window)
        self.skipped_steps = self.rollbacks = 0
        self.skipped_samples: list[list[int]] = []
        self.streak: list[tuple[int, int]] = []  # (step, first sample) of the current run of bad steps
        self._loss_sum = None
        self._mean = 0.0
        self._reason: str | None = None
        if cfg.enabled:
            self._install(engine)

    # ---------------------------------------------------------------- hooks
    def _install(self, engine) -> None:
        inner = engine.basic_optimizer
        inner_step = inner.step

        @functools.wraps(inner_step)  # keeps torch's lr-scheduler marker on the step it wraps
        def guarded_inner_step(*args, **kwargs):
            if self._reason is None and not self._grad_norm_finite():
                self._reason = "non-finite gradient norm"
            if self._reason is not None:
                # The engine reads this flag after the step: it counts a skipped step and leaves the lr
                # scheduler alone, as for an fp16 overflow.
                engine.optimizer.overflow = True
                return None
            if engine.optimizer is inner:  # ZeRO-0 fp32: nobody else resets the flag we set
                inner.overflow = False
            return inner_step(*args, **kwargs)

        # An instance attribute shadows the method for this optimizer only; DeepSpeed calls it by name.
        inner.step = guarded_inner_step

    def _grad_norm_finite(self) -> bool:
        """The global gradient norm of the step in progress (identical on all ranks) is finite."""
        import torch

        opt = self.engine.optimizer
        if opt is not self.engine.basic_optimizer:  # ZeRO 1-3, bf16: computed before the inner step
            norm = getattr(opt, "_global_grad_norm", None)
            return norm is None or math.isfinite(float(norm))
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        return not grads or bool(torch.isfinite(torch.stack([g.norm() for g in grads]).sum()))

    # ---------------------------------------------------------------- per step
    def watch(self, loss, step: int):
        """Pass a micro-batch's loss through on its way to ``engine.backward``: fault injection
        (``nan@forward``, ``spike@forward``) and accumulation for the verdict, on the device."""
        loss = self.fault.corrupt_loss(loss, step)
        if self.cfg.enabled:
            value = loss.detach().float()
            self._loss_sum = value if self._loss_sum is None else self._loss_sum + value
        return loss

    def step(self) -> None:
        """``engine.step()`` with the verdict decided first at the gradient-accumulation boundary."""
        if self.cfg.enabled and self.engine.is_gradient_accumulation_boundary():
            self._decide()
        self.engine.step()

    def _decide(self) -> None:
        import torch.distributed as dist

        total = self._loss_sum.clone()
        dist.all_reduce(total)
        self._loss_sum = None
        count = self.engine.gradient_accumulation_steps() * dist.get_world_size()
        self._mean = total.item() / count
        if not math.isfinite(self._mean):
            self._reason = f"non-finite loss ({self._mean})"
        elif self.cfg.spike_factor and len(self.losses) == self.losses.maxlen:
            median = statistics.median(self.losses)
            if self._mean > self.cfg.spike_factor * median:
                self._reason = (
                    f"loss spike ({self._mean:.4g} > {self.cfg.spike_factor:g} x median {median:.4g})"
                )

    def end_step(self, step: int, first_sample: int, samples: int) -> bool:
        """Record the verdict of optimizer step ``step`` (its samples ``[first_sample, +samples)``);
        returns True when the run must roll back (:meth:`rollback_window` says to where)."""
        reason, self._reason = self._reason, None
        self.fault.end_step()
        if reason is None:
            self.streak.clear()
            if self.cfg.enabled:
                self.losses.append(self._mean)
            return False
        self.skipped_steps += 1
        self.streak.append((step, first_sample))
        self.log(
            f"[guard] step {step} skipped: {reason}; samples {first_sample}..{first_sample + samples - 1} "
            f"did not update the model ({len(self.streak)} bad in a row, {self.skipped_steps} skipped in all)"
        )
        return 0 < self.cfg.max_bad_steps <= len(self.streak)

    def rollback_window(self, last_step: int, end_sample: int) -> int:
        """Register a rollback after bad step ``last_step``: the stream will jump over the streak's samples
        ``[start, end_sample)``. Returns the streak's first step (roll back to a checkpoint before it)."""
        first_step, start = self.streak[0]
        if self.rollbacks >= self.cfg.max_rollbacks:
            raise MegaMetaError(
                f"training diverged at steps {first_step}..{last_step} again after {self.rollbacks} rollbacks "
                f"(train.guard.max_rollbacks); lower the learning rate or inspect samples {start}..{end_sample - 1}"
            )
        self.skipped_samples.append([start, end_sample])
        self.rollbacks += 1
        self.streak.clear()
        self.log(
            f"[guard] steps {first_step}..{last_step} diverged: rollback {self.rollbacks}, "
            f"skipping samples {start}..{end_sample - 1}"
        )
        return first_step

    def position(self, sample: int) -> int:
        """The data stream's next sample: ``sample``, or past a skipped window that starts there."""
        for start, end in self.skipped_samples:
            if sample == start:
                sample = end
        return sample

    # ---------------------------------------------------------------- state
    def counts(self) -> dict[str, int]:
        """For the train log and TensorBoard (``train/skipped_steps``, ``train/rollbacks``)."""
        return {"skipped_steps": self.skipped_steps, "rollbacks": self.rollbacks}

    def state_dict(self) -> dict:
        return {"skipped_steps": self.skipped_steps, "rollbacks": self.rollbacks,
                "skipped_samples": [list(w) for w in self.skipped_samples]}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters (absent in checkpoints written before the guard: zeros)."""
        self.skipped_steps = state.get("skipped_steps", 0)
        self.rollbacks = state.get("rollbacks", 0)
        self.skipped_samples = [list(w) for w in state.get("skipped_samples", [])]
