"""The launchers ``megameta pipeline`` starts a training phase with: a registry (name -> command builder).

Each builder turns (processes per node, rendezvous port, the ``megameta`` arguments) into the
command line a user would type. ``launch.launcher`` in the config takes these names.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from megameta.errors import InputError


def _tool(name: str) -> str:
    """A launcher script from this interpreter's environment (the venv need not be activated)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise InputError(f"launch.launcher: '{name}' not found next to {sys.executable} or on PATH")
    return found


# Each launcher's line, as a user would type it (``*args`` are megameta's: the verb and its flags).
def _deepspeed(n: int, port: int, args: list[str]) -> list[str]:
    return [_tool("deepspeed"), "--num_gpus", str(n), "--master_port", str(port), "--module", "megameta.cli", *args]  # fmt: skip


def _torchrun(n: int, port: int, args: list[str]) -> list[str]:
    return [_tool("torchrun"), "--nproc_per_node", str(n), "--master_port", str(port), "-m", "megameta.cli", *args]  # fmt: skip


def _mpirun(n: int, port: int, args: list[str]) -> list[str]:
    return [_tool("mpirun"), "-np", str(n), "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo",
            "-x", f"MASTER_PORT={port}", sys.executable, "-m", "megameta.cli", *args]  # fmt: skip


def _in_process(n: int, port: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "megameta.cli", *args]


LAUNCHERS: dict[str, Callable[[int, int, list[str]], list[str]]] = {
    "deepspeed": _deepspeed,
    "torchrun": _torchrun,
    "mpirun": _mpirun,
    "none": _in_process,
}


def launch_command(launcher: str, nproc: int, config_path: Path, phase: str, port: int) -> list[str]:
    """The command line that trains ``phase`` of the config at ``config_path`` with ``launcher``."""
    if launcher not in LAUNCHERS:
        raise InputError(f"launch.launcher: unknown launcher {launcher!r} (valid: {', '.join(LAUNCHERS)})")
    return LAUNCHERS[launcher](nproc, port, ["train", "--config", str(config_path), "--phase", phase])
