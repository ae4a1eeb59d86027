"""Entry point of ``megameta train``: one phase, then the process group torn down cleanly."""

from __future__ import annotations

import os
import sys

import torch.distributed as dist

from megameta.config import RunConfig
from megameta.train.trainer import Trainer
from megameta.train.watchdog import die_with_launcher


def train_phase(cfg: RunConfig, phase_name: str) -> int:
    """Train phase ``phase_name`` of ``cfg``; returns the process exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    die_with_launcher()
    code = Trainer(cfg, phase_name).run()
    sys.stdout.flush()
    if dist.is_initialized():
        # Tear the process group down before exit: leaving it to interpreter shutdown can abort a rank
        # ("terminate called without an active exception") and turn a finished run into a failed job.
        dist.barrier()
        dist.destroy_process_group()
    mpi = sys.modules.get("mpi4py.MPI")  # under mpirun, DeepSpeed discovered the ranks through mpi4py
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()  # before the CLI's exit_process skips mpi4py's own atexit finalize
    return code
