"""What the SLURM templates (``slurm/*.sbatch``, ``slurm/submit_pipeline.sh``) ask Python.

``python tools/slurm_env.py config --config C [KEY=VALUE ...]``
    prints shell assignments of the run's paths, all from :mod:`megameta.layout`: ``RUN_DIR``,
    ``LOG_ROOT``, ``TOKENIZER_DIR``, ``SHARDS_DIR``, ``PHASES=(<phase names in order>)`` and, per
    phase in the same order, ``DONE_FILES``, ``HF_DIRS``, ``EVAL_DIRS``, ``REPORT_FILES``. A bad
    config exits 2 with the loader's message (the field path), before anything is submitted.

``python tools/slurm_env.py converted --config C --phase P [KEY=VALUE ...]``
    exits 0 when the phase's HF dir already holds the checkpoint its ``DONE.json`` names (the
    pipeline's own freshness test, :func:`megameta.pipeline.hf_up_to_date`), 1 when not.

``python tools/slurm_env.py rendezvous [--ranks] [--probe-port]``
    prints ``export MASTER_ADDR=... MASTER_PORT=... MM_NODE_NAMES=... MM_NODE_ADDRS=...`` (with
    ``--ranks`` also ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` from ``SLURM_PROCID``/``SLURM_LOCALID``/
    ``SLURM_NTASKS``, as one task sees them). MASTER_ADDR is the first host of ``scontrol show
    hostnames $SLURM_JOB_NODELIST`` as SLURM reaches it: its ``NodeAddr`` (``scontrol show node``),
    which is the node's name unless the cluster gives nodes addresses (no DNS for compute nodes). MASTER_PORT is derived from the job id (:func:`megameta.train.dist.slurm_env`),
    so the templates and a bare ``srun megameta train`` agree. ``--probe-port`` (on the master host
    only) moves the port up to the next one free together with the port after it (the preflight's),
    so a port held by an unrelated process does not fail the job.

``python tools/slurm_env.py reach``
    (in the batch script) connects to every node of the job, at its ``NodeAddr`` and at the
    addresses the preflight recorded for its training interface, on the ``slurmd`` port, within
    ``MM_REACH_TIMEOUT`` seconds (3); prints and exits 1 naming each node that does not answer,
    its address and its ranks; exits 0 when all answer.

``python tools/slurm_env.py preflight`` (once per rank, under ``srun``)
    each node's first rank prints its hostname, visible devices and the interface (and address)
    that leads to MASTER_ADDR, and records that address for ``reach``; then one all-reduce across
    all ranks (NCCL on GPUs, else gloo) measures the bus bandwidth, printed by rank 0. A rank
    that cannot join within ``MM_PREFLIGHT_TIMEOUT`` seconds (60) exits 1 naming its node.

Output of ``config`` and ``rendezvous`` is meant for ``eval "$(python tools/slurm_env.py ...)"``;
values are shell-quoted.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _assign(name: str, value: str, export: bool = False) -> str:
    return f"{'export ' if export else ''}{name}={shlex.quote(value)}"


def _array(name: str, values: list[str]) -> str:
    return f"{name}=({' '.join(shlex.quote(v) for v in values)})"


def config_info(config: str, overrides: list[str]) -> list[str]:
    from megameta.config import load_config
    from megameta.layout import RunLayout

    cfg = load_config(config, overrides)
    root = RunLayout.of(Path(cfg.run_dir).resolve())
    phases = [root.phase(p.name) for p in cfg.phases]
    return [
        _assign("RUN_DIR", str(root.root)),
        _assign("LOG_ROOT", str(root.logs)),
        _assign("TOKENIZER_DIR", str(root.tokenizer)),
        _assign("SHARDS_DIR", str(root.shards)),
        _array("PHASES", [p.name for p in cfg.phases]),
        _array("DONE_FILES", [str(p.done) for p in phases]),
        _array("HF_DIRS", [str(p.hf) for p in phases]),
        _array("EVAL_DIRS", [str(p.eval) for p in phases]),
        _array("REPORT_FILES", [str(p.report) for p in phases]),
    ]


def converted(config: str, phase: str, overrides: list[str]) -> bool:
    from megameta.config import load_config
    from megameta.errors import ConfigError
    from megameta.pipeline import hf_up_to_date

    cfg = load_config(config, overrides)
    if phase not in [p.name for p in cfg.phases]:
        raise ConfigError(f"--phase {phase}: not a phase of {config}")
    return hf_up_to_date(cfg.layout.phase(phase))


# ------------------------------------------------------------------ nodes and addresses
def _scontrol(*args: str) -> str:
    try:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def job_nodes(environ: dict[str, str]) -> list[str]:
    """The job's hosts in SLURM's order (``scontrol show hostnames``)."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or ""
    return _scontrol("show", "hostnames", nodelist).split() or [nodelist]


def node_addrs(nodes: list[str]) -> dict[str, str]:
    """Each node's ``NodeAddr`` from SLURM (the name itself where SLURM does not know the node)."""
    out = _scontrol("-o", "show", "node", ",".join(nodes))
    known = dict(re.findall(r"NodeName=(\S+) .*?NodeAddr=(\S+)", out))
    return {n: known.get(n, n) for n in nodes}


def _is_local_address(addr: str) -> bool:
    """``addr`` (a name or an address) belongs to this host: we can bind to it."""
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                return False
    return True


def rendezvous(environ: dict[str, str], probe_port: bool = False, ranks: bool = False) -> list[str]:
    from megameta.train.dist import slurm_env

    if "SLURM_JOB_ID" not in environ or not (
        environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    ):
        raise SystemExit(
            "slurm_env.py rendezvous: SLURM_JOB_ID and SLURM_JOB_NODELIST must be set (run inside a job)"
        )
    env = slurm_env(environ)
    nodes = job_nodes(environ)
    addrs = node_addrs(nodes)
    # SLURM's own address for the first node: its NodeAddr is its name unless the admin set an
    # address (clusters without DNS for compute nodes), and a name that resolves here, on the
    # master, need not resolve on the other nodes.
    env["MASTER_ADDR"] = addrs.get(nodes[0], env["MASTER_ADDR"])
    if probe_port and _is_local_address(env["MASTER_ADDR"]):
        port = int(env["MASTER_PORT"])
        for candidate in range(port, port + 200):  # deterministic: the first free pair from the job's port
            if _ports_free(candidate, candidate + 1):
                env["MASTER_PORT"] = str(candidate)
                break
    env["MM_NODE_NAMES"] = " ".join(nodes)
    env["MM_NODE_ADDRS"] = " ".join(addrs[n] for n in nodes)
    order = ("MASTER_ADDR", "MASTER_PORT", "MM_NODE_NAMES", "MM_NODE_ADDRS")
    order += ("RANK", "LOCAL_RANK", "WORLD_SIZE") if ranks else ()
    return [_assign(k, env[k], export=True) for k in order if k in env]


# ------------------------------------------------------------------ reachability
def _slurmd_port() -> int:
    match = re.search(r"^SlurmdPort\s*=\s*(\d+)", _scontrol("show", "config"), re.M)
    return int(match.group(1)) if match else 6818


def _answers(addr: str, port: int, timeout: float) -> str | None:
    """None when ``addr:port`` accepts a connection, else why not."""
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def ranks_of(node_index: int, nodes: int, ntasks: int) -> list[int]:
    """Ranks SLURM's default block distribution puts on node ``node_index`` (ranks 0..ntasks-1)."""
    per, extra = divmod(ntasks, nodes)
    start = node_index * per + min(node_index, extra)
    return list(range(start, start + per + (node_index < extra)))


def reach(environ: dict[str, str]) -> list[str]:
    """A line per node that does not answer on any of its addresses (empty: all reachable)."""
    nodes = environ.get("MM_NODE_NAMES", "").split() or job_nodes(environ)
    addrs = environ.get("MM_NODE_ADDRS", "").split()
    addrs = dict(zip(nodes, addrs, strict=True)) if len(addrs) == len(nodes) else node_addrs(nodes)
    recorded = Path(environ.get("MM_PREFLIGHT_DIR", "/nonexistent"))
    checks = []  # (node, address, what)
    for node in nodes:
        checks.append((node, addrs[node], "NodeAddr"))
        data = recorded / f"{node}.addr"
        if data.exists():
            addr, _, iface = data.read_text().strip().partition(" ")
            if addr and addr != addrs[node]:
                checks.append((node, addr, f"training interface {iface}"))
    port, timeout = _slurmd_port(), float(environ.get("MM_REACH_TIMEOUT", "3"))
    with ThreadPoolExecutor(max_workers=min(64, len(checks))) as pool:
        results = list(pool.map(lambda c: _answers(c[1], port, timeout), checks))
    ntasks = int(environ.get("SLURM_NTASKS", len(nodes)))
    lines = []
    for (node, addr, what), error in zip(checks, results, strict=True):
        if error is not None:
            ranks = ranks_of(nodes.index(node), len(nodes), ntasks)
            shown = f"{ranks[0]}-{ranks[-1]}" if len(ranks) > 1 else str(ranks[0]) if ranks else "none"
            lines.append(f"node {node} (rank {shown}) unreachable at {addr} ({what}), port {port}: {error}")
    return lines


# ------------------------------------------------------------------ preflight
def _interfaces() -> dict[str, str]:
    """IPv4 address -> interface name, for every interface that has one."""
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24])  # SIOCGIFADDR
            except OSError:
                continue
            out[addr] = name
    return out


def route_to(master: str, port: int) -> tuple[str, str]:
    """(local address, interface) this host uses to reach ``master``, or the pinned interface's."""
    addrs = _interfaces()
    pinned = os.environ.get("GLOO_SOCKET_IFNAME") or os.environ.get("NCCL_SOCKET_IFNAME")
    if pinned:
        name = pinned.split(",")[0].lstrip("=^")
        for addr, iface in addrs.items():
            if iface == name:
                return addr, f"{iface} (pinned)"
        raise SystemExit(
            f"preflight: {socket.gethostname()}: interface {name} (GLOO/NCCL_SOCKET_IFNAME) has no IPv4 address"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((master, port))  # UDP: picks the route, sends nothing
        local = s.getsockname()[0]
    return local, addrs.get(local, "?")


def _devices() -> str:
    import torch

    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return f"{torch.cuda.device_count()} GPU(s) ({', '.join(names)}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
    return f"no GPU, {os.cpu_count()} CPUs"


def preflight(environ: dict[str, str]) -> int:
    import datetime

    import torch
    import torch.distributed as dist

    rank, world = int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"])
    local = int(environ.get("SLURM_LOCALID", 0))
    host = socket.gethostname()
    master, port = environ["MASTER_ADDR"], int(environ["MASTER_PORT"]) + 1
    try:
        socket.getaddrinfo(master, port)
    except OSError as e:
        print(
            f"preflight: rank {rank} on node {host}: MASTER_ADDR={master} does not resolve here: {e}",
            file=sys.stderr,
        )
        return 1
    addr, iface = route_to(master, port)
    if local == 0:
        print(
            f"preflight: node {host}: {_devices()}; interface {iface} {addr} -> master {master}", flush=True
        )
        if environ.get("MM_PREFLIGHT_DIR"):
            out = Path(environ["MM_PREFLIGHT_DIR"]) / f"{environ.get('SLURMD_NODENAME', host)}.addr"
            out.write_text(f"{addr} {iface.split()[0]}\n")
    cuda = torch.cuda.is_available()
    timeout = float(environ.get("MM_PREFLIGHT_TIMEOUT", "60"))
    try:
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            init_method=f"tcp://{master}:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout),
        )
        device = (
            torch.device("cuda", local % max(1, torch.cuda.device_count())) if cuda else torch.device("cpu")
        )
        n = (64 if cuda else 4) * 2**20 // 4  # fp32 elements: 64 MiB on GPUs, 4 MiB on CPUs
        x = torch.ones(n, device=device)
        dist.all_reduce(x)  # warm-up: connections are set up lazily
        reps, t = 3, time.perf_counter()
        for _ in range(reps):
            dist.all_reduce(x)
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t) / reps
        if x[0].item() != world ** (reps + 1):
            raise RuntimeError(f"all-reduce returned {x[0].item()}, expected {world ** (reps + 1)}")
        dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 (any failure here is the node's, reported by name)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"preflight: rank {rank} on node {host} ({addr}, {iface}) failed to join the all-reduce at {master}:{port}: {first}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    if rank == 0:
        bus = 2 * (world - 1) / world * n * 4 / seconds / 1e9
        print(f"preflight: all-reduce of {n * 4 >> 20} MiB across {world} rank(s) in {seconds * 1e3:.1f} ms: "
              f"bus bandwidth {bus:.2f} GB/s ({'nccl' if cuda else 'gloo'})", flush=True)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slurm_env.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, text in (
        ("config", "paths of a run config"),
        ("converted", "is the phase's HF dir up to date?"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True)
        if name == "converted":
            p.add_argument("--phase", required=True)
        p.add_argument("overrides", nargs="*")
    p = sub.add_parser("rendezvous", help="MASTER_ADDR/MASTER_PORT (+ rank variables inside a task)")
    p.add_argument("--ranks", action="store_true", help="also RANK/LOCAL_RANK/WORLD_SIZE (inside a task)")
    p.add_argument("--probe-port", action="store_true", help="skip ports in use on this (the master) host")
    sub.add_parser("reach", help="does every node of the job answer? (exit 1 naming those that do not)")
    sub.add_parser("preflight", help="per rank under srun: report the node, all-reduce bandwidth")
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    if args.what in ("config", "converted"):
        from megameta.errors import MegaMetaError

        try:
            if args.what == "converted":
                return 0 if converted(args.config, args.phase, args.overrides) else 1
            lines = config_info(args.config, args.overrides)
        except MegaMetaError as e:
            print(f"{args.config}: {e}", file=sys.stderr)
            return e.exit_code
    elif args.what == "rendezvous":
        lines = rendezvous(environ, args.probe_port, args.ranks)
    elif args.what == "reach":
        lines = reach(environ)
        for line in lines:
            print(line, flush=True)
        return 1 if lines else 0
    else:
        return preflight(environ)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
