"""``megameta plan``: check a cluster run before it costs GPU hours (see :mod:`megameta.plan.core`)."""

from __future__ import annotations

import json

from megameta.config import RunConfig
from megameta.errors import ConfigError
from megameta.hardware import get_gpu, parse_memory_gib
from megameta.plan.core import Cluster, check_fit, make_plan
from megameta.plan.report import render

__all__ = ["Cluster", "check_fit", "make_plan", "render", "run_plan"]


def run_plan(
    cfg: RunConfig,
    nodes: int = 1,
    gpus_per_node: int | None = None,
    gpu: str = "h100-sxm",
    gpu_memory: str | None = None,
    mfu: float = 0.45,
    as_json: bool = False,
) -> tuple[str, str | None]:
    """(text to print, error): the table (or JSON) and None when the run fits; with the one-line
    message naming the field to change when it does not (the caller exits 2 after printing both).

    Batch settings that disagree with the world size raise ConfigError before any table.
    """
    if nodes < 1:
        raise ConfigError(f"--nodes: must be >= 1, got {nodes}")
    gpn = gpus_per_node if gpus_per_node is not None else cfg.launch.nproc
    if gpn < 1:
        raise ConfigError(f"--gpus-per-node: must be >= 1, got {gpn}")
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu: must be in (0, 1], got {mfu}")
    spec = get_gpu(gpu)
    memory = parse_memory_gib(gpu_memory) if gpu_memory else spec.memory_gib
    plan = make_plan(cfg, Cluster(nodes, gpn, spec, memory, mfu))
    error = None
    try:
        check_fit(plan)
    except ConfigError as e:
        error = str(e)
    plan["ok"], plan["error"] = error is None, error
    return (json.dumps(plan, indent=2) if as_json else render(plan)), error
