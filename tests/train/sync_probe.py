"""Run one training phase with the tensor methods that force a host-device synchronization made to
fail inside every training micro-step (``Trainer._micro_step``); used by ``test_no_sync.py``.

Usage: ``python sync_probe.py CONFIG PHASE [cuda]``. Prints ``micro-steps checked: N`` and exits 0
when no micro-step synchronized; an offending call raises with its traceback. With ``cuda``, the
micro-steps also run under ``torch.cuda.set_sync_debug_mode("error")``.

On CPU every tensor is a host tensor, so the guard cannot tell a device tensor from a host one: it
refuses the methods on any tensor, called from the main thread while a micro-step runs (the
prefetch thread builds batches with numpy and may do as it likes). One exception: DeepSpeed's own
optimizer step (``engine._take_model_step``, once per optimizer step, at the accumulation boundary)
checks the global gradient norm for inf/NaN with ``bool(...)``; that is DeepSpeed's design, not the
step's, and is allowed. The divergence guard's verdict (``DivergenceGuard._decide``, also once per
optimizer step, at the boundary, before the optimizer may step) reads the all-reduced mean loss the
same way and is allowed for the same reason (``train.guard.enabled=false`` removes it). Under CUDA
sync-debug mode both are excluded the same way.
"""

from __future__ import annotations

import sys
import threading

import torch

from megameta.config import load_config
from megameta.train import trainer as trainer_mod
from megameta.train.dist import exit_process
from megameta.train.entry import train_phase

#: Tensor methods whose result needs the device's values on the host.
SYNCING = ("item", "tolist", "cpu", "numpy", "nonzero", "masked_select", "unique", "__bool__", "__int__",
           "__float__", "__index__")  # fmt: skip
ACTIVE = {"on": False, "checked": 0}


class SyncError(AssertionError):
    pass


#: (function name, file fragment) of the once-per-optimizer-step reads that are allowed.
ALLOWED = (("_take_model_step", "deepspeed"), ("_decide", "megameta/train/guard.py"))


def _in_deepspeed_optimizer_step() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if any(frame.f_code.co_name == name and part in frame.f_code.co_filename for name, part in ALLOWED):
            return True
        frame = frame.f_back
    return False


def _forbidden() -> bool:
    return (
        ACTIVE["on"]
        and threading.current_thread() is threading.main_thread()
        and not _in_deepspeed_optimizer_step()
    )


def _guarded(name: str, original):
    def method(self, *args, **kwargs):
        if _forbidden():
            raise SyncError(f"host-device synchronization in a training micro-step: Tensor.{name}")
        return original(self, *args, **kwargs)

    return method


def _bool_index(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys)


def _unchecked_on_cuda(method):
    """``method`` run with CUDA's sync debug mode off: one of the ALLOWED once-per-step reads."""

    def unchecked(self, *args, **kwargs):
        torch.cuda.set_sync_debug_mode("default")
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    return unchecked


def install() -> None:
    """Patch the syncing methods and functions, and make ``Trainer._micro_step`` switch them on."""
    for name in SYNCING:
        setattr(torch.Tensor, name, _guarded(name, getattr(torch.Tensor, name)))
    torch.nonzero = _guarded("nonzero", torch.nonzero)
    torch.masked_select = _guarded("masked_select", torch.masked_select)
    getitem = torch.Tensor.__getitem__

    def masked_getitem(self, key):  # boolean-mask indexing: the result's size is data-dependent
        if _bool_index(key) and _forbidden():
            raise SyncError("host-device synchronization in a training micro-step: boolean-mask indexing")
        return getitem(self, key)

    torch.Tensor.__getitem__ = masked_getitem
    micro_step = trainer_mod.Trainer._micro_step
    cuda = len(sys.argv) > 3 and sys.argv[3] == "cuda"
    if cuda:
        from deepspeed.runtime.engine import DeepSpeedEngine

        from megameta.train.guard import DivergenceGuard

        for cls, name in ((DeepSpeedEngine, "_take_model_step"), (DivergenceGuard, "_decide")):
            setattr(cls, name, _unchecked_on_cuda(getattr(cls, name)))

    def checked(self, *args, **kwargs):
        ACTIVE["on"] = True
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            return micro_step(self, *args, **kwargs)
        finally:
            ACTIVE["on"] = False
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
            ACTIVE["checked"] += 1

    trainer_mod.Trainer._micro_step = checked


def self_check() -> None:
    """The guard catches what it should: without this, a test of it could not fail."""
    ACTIVE["on"] = True
    try:
        for call in (lambda: torch.ones(2).nonzero(), lambda: torch.ones(2)[torch.ones(2).bool()],
                     lambda: torch.ones(1).item(), lambda: bool(torch.ones(1))):  # fmt: skip
            try:
                call()
            except SyncError:
                continue
            raise AssertionError("the sync guard let a syncing call through")
    finally:
        ACTIVE["on"] = False


if __name__ == "__main__":
    install()
    self_check()
    code = train_phase(load_config(sys.argv[1]), sys.argv[2])
    print(f"micro-steps checked: {ACTIVE['checked']}", flush=True)
    exit_process(code)
