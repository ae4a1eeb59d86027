"""Shell assignments for the SLURM templates (``slurm/*.sbatch``, ``slurm/submit_pipeline.sh``).

``python tools/slurm_env.py config --config C [KEY=VALUE ...]``
    prints ``RUN_DIR=<absolute run dir>`` and ``PHASES=(<phase names in order>)``; a bad config
    exits 2 with the loader's message (the field path), before anything is submitted.

``python tools/slurm_env.py rendezvous [--ranks] [--probe-port]``
    prints ``export MASTER_ADDR=... MASTER_PORT=...`` (with ``--ranks`` also ``RANK``/``LOCAL_RANK``/
    ``WORLD_SIZE`` from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS``, as one task sees them) computed from SLURM's variables by :func:`megameta.train.dist.slurm_env`,
    so the templates and a bare ``srun megameta train`` agree: MASTER_ADDR is the first host of
    ``scontrol show hostnames $SLURM_JOB_NODELIST``, MASTER_PORT is derived from the job id.
    ``--probe-port`` (on the master host only) moves the port up to the next free one, so a port
    held by an unrelated process on the node does not fail the job; the batch script exports the
    result and every task inherits it.

Output is meant for ``eval "$(python tools/slurm_env.py ...)"``; values are shell-quoted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from pathlib import Path


def _assign(name: str, value: str, export: bool = False) -> str:
    return f"{'export ' if export else ''}{name}={shlex.quote(value)}"


def config_info(config: str, overrides: list[str]) -> list[str]:
    from megameta.config import load_config

    cfg = load_config(config, overrides)
    names = [p.name for p in cfg.phases]
    return [
        _assign("RUN_DIR", str(Path(cfg.run_dir).resolve())),
        f"PHASES=({' '.join(shlex.quote(n) for n in names)})",
    ]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def _is_this_host(name: str) -> bool:
    mine = {socket.gethostname(), socket.gethostname().split(".")[0], socket.getfqdn(), "localhost"}
    return name in mine or name.split(".")[0] in mine


def rendezvous(environ: dict[str, str], probe_port: bool = False, ranks: bool = False) -> list[str]:
    from megameta.train.dist import slurm_env

    if "SLURM_JOB_ID" not in environ or not (
        environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    ):
        raise SystemExit(
            "slurm_env.py rendezvous: SLURM_JOB_ID and SLURM_JOB_NODELIST must be set (run inside a job)"
        )
    env = slurm_env(environ)
    if probe_port and _is_this_host(env["MASTER_ADDR"]):
        port = int(env["MASTER_PORT"])
        for candidate in range(port, port + 200):  # deterministic: the first free one from the job's port
            if _port_free(candidate):
                env["MASTER_PORT"] = str(candidate)
                break
    order = ("MASTER_ADDR", "MASTER_PORT") + (("RANK", "LOCAL_RANK", "WORLD_SIZE") if ranks else ())
    return [_assign(k, env[k], export=True) for k in order if k in env]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slurm_env.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("config", help="RUN_DIR and PHASES of a run config")
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("rendezvous", help="MASTER_ADDR/MASTER_PORT (+ rank variables inside a task)")
    p.add_argument("--ranks", action="store_true", help="also RANK/LOCAL_RANK/WORLD_SIZE (inside a task)")
    p.add_argument("--probe-port", action="store_true", help="skip ports in use on this (the master) host")
    args = parser.parse_args(argv)
    if args.what == "config":
        from megameta.errors import MegaMetaError

        try:
            lines = config_info(args.config, args.overrides)
        except MegaMetaError as e:
            print(f"{args.config}: {e}", file=sys.stderr)
            return e.exit_code
    else:
        lines = rendezvous(dict(os.environ), args.probe_port, args.ranks)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
