"""Process-group set-up for every launcher: deepspeed, torchrun, mpirun, srun.

``deepspeed`` and ``torchrun`` export RANK/LOCAL_RANK/WORLD_SIZE; ``mpirun`` does
not, and DeepSpeed fills them from mpi4py (``auto_mpi_discovery``). Under a bare
``srun`` only SLURM's variables exist, so we map them here.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import zlib
from typing import NoReturn


def slurm_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT derived from SLURM's variables.

    MASTER_ADDR is the first host of SLURM_JOB_NODELIST (expanded by ``scontrol show hostnames``);
    MASTER_PORT is a deterministic port in [20000, 40000) from the job id, so every task agrees.
    """
    env = dict(os.environ if environ is None else environ)
    out: dict[str, str] = {}
    if "SLURM_PROCID" in env:
        out["RANK"] = env["SLURM_PROCID"]
        out["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        out["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if nodelist:
        out["MASTER_ADDR"] = first_host(nodelist)
    if "SLURM_JOB_ID" in env:
        out["MASTER_PORT"] = str(20000 + zlib.crc32(env["SLURM_JOB_ID"].encode()) % 20000)
    return out


def first_host(nodelist: str) -> str:
    """First hostname of a SLURM node list such as ``gpu[01-04]``."""
    try:
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
        ).stdout.split()
        if hosts:
            return hosts[0]
    except (OSError, subprocess.CalledProcessError):
        pass
    # No scontrol (e.g. outside the cluster): expand the first range ourselves.
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rng = head.split("[", 1)
        first = rng.rstrip("]").split(",")[0].split("-")[0]
        return prefix + first
    return head


def init_distributed(timeout_s: int) -> tuple[int, int, int]:
    """Initialize torch.distributed through DeepSpeed; returns (rank, local_rank, world_size)."""
    import deepspeed
    import torch.distributed as dist

    if "RANK" not in os.environ:
        for key, value in slurm_env().items():
            os.environ.setdefault(key, value)
    single = not any(k in os.environ for k in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"))
    if single:  # plain `python -m megameta.cli train`: a world of one
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if not dist.is_initialized():
        deepspeed.init_distributed(
            auto_mpi_discovery=True, timeout=datetime.timedelta(seconds=timeout_s), verbose=False
        )
        _unlink_shm_workspace()
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size()


def _unlink_shm_workspace() -> None:
    """Remove the name of this rank's DeepSpeed CPU all-reduce segment, keeping the mapping.

    On CPU, DeepSpeed's shared-memory all-reduce (``ops/csrc/cpu/comm/shm.cpp``) creates
    ``/dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>`` (64 MiB) per
    rank and never removes it, so every run, finished or killed, leaks that much RAM. Its
    set-up maps every rank's segment before ``init_distributed`` returns; after a barrier all
    ranks have done so and each unlinks its own name. The memory is freed when the last rank
    exits, however it exits.
    """
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"), dist.get_rank()
    )
    try:
        os.unlink(f"/dev/shm/{name}")
    except FileNotFoundError:  # not all ranks on this node (no shm all-reduce) or another naming
        pass


def free_port() -> int:
    """A TCP port free on this host right now (for MASTER_PORT on one node)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerator_device(local_rank: int):
    """(this rank's torch device, DeepSpeed's accelerator): the GPU of ``local_rank``, or the CPU."""
    import torch
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    if acc.device_name() == "cpu":
        return torch.device("cpu"), acc
    device = torch.device(acc.device_name(local_rank))
    torch.cuda.set_device(device)
    return device, acc


def all_reduce_host(device, tensor):
    """Sum a small host tensor over ranks through ``device`` (NCCL reduces device tensors only; gloo
    takes host ones); returns the sum on the host."""
    import torch.distributed as dist

    on_device = tensor.to(device)
    dist.all_reduce(on_device)
    return on_device.cpu()


def exit_process(code: int) -> NoReturn:
    """End a process that has finished its distributed work (files closed, process group torn down)
    without interpreter finalization: there, the destructors of gloo's and DeepSpeed's native objects
    can abort a finished rank ("terminate called without an active exception", exit -6) and fail a
    job that succeeded. Output is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
