"""Liveness of a training job: per-rank heartbeats, a watchdog thread, and the stuck-rank report.

Backends differ in whether they time out a stuck collective at all (DeepSpeed's CPU shared-memory
all-reduce spins forever), so each rank records how far it got in a heartbeat file, and a thread
fails the rank when a step makes no progress for ``train.dist_timeout_s``. The report that names
the rank that stopped is a pure function of the heartbeats (:func:`stuck_rank_report`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch.distributed as dist

from megameta.errors import MegaMetaError

#: Points of a training step a heartbeat records, in order.
POINTS = ("forward", "backward", "sync")

#: (step, micro-batch, index into POINTS); (-1, -1, -1) when a rank's heartbeat is unreadable.
Progress = tuple[int, int, int]
UNKNOWN: Progress = (-1, -1, -1)


def stuck_rank_report(progress: dict[int, Progress]) -> str:
    """Which ranks are behind the furthest one, and where each stopped.

    A rank that never wrote a heartbeat (``UNKNOWN``) counts as behind everyone.
    """
    furthest = max(progress.values())
    behind = sorted(r for r, p in progress.items() if p < furthest)
    if not behind:
        return "every rank reached the same point (a peer process died or the network failed)"
    parts = []
    for r in behind:
        step, _, point = progress[r]
        parts.append(
            f"rank {r} stopped in step {step} ({POINTS[point]})" if step >= 0 else f"rank {r} never started"
        )
    return ", ".join(parts)


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from the process group (a dead peer, a timeout, a broken link).

    Out-of-memory errors, shape bugs and the like are not: they keep their own traceback.
    """
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        key in text
        for key in (
            "gloo",
            "nccl",
            "connection reset",
            "connection closed",
            "timed out",
            "timeout",
            "pair closure",
            "broken pipe",
        )
    )


#: Parents whose death leaves ranks running: torchrun's agent and DeepSpeed's per-node ``launch.py`` start
#: ranks in sessions of their own (torchrun) or never signal them when killed themselves. SLURM's
#: ``slurmstepd`` and Open MPI's daemons clean up their own ranks.
LAUNCHER_MARKERS = (b"torch.distributed.run", b"torchrun", b"deepspeed.launcher.launch")


def die_with_launcher() -> bool:
    """Have the kernel SIGKILL this rank when its launcher dies (Linux ``PR_SET_PDEATHSIG``).

    Without it a launcher killed by ``kill -9``, the OOM killer or a lost node agent leaves its ranks
    training as orphans, still writing checkpoints into the run dir while the requeued job starts
    there. Only under the launchers named in :data:`LAUNCHER_MARKERS`; returns whether it is armed.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return False
    if not any(marker in cmdline for marker in LAUNCHER_MARKERS):
        return False
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the launcher died before the request took effect
        os._exit(1)
    return True


def heartbeat_dir(configured: str, phase_dir: Path) -> Path:
    """Where this run's heartbeat files go: ``train.heartbeat_dir`` when set (e.g. a shared path, so
    that every rank's report can read every rank), else a node-local temporary dir keyed by the phase
    dir (``$TMPDIR/megameta-heartbeat-<hash>``): liveness never touches the shared filesystem."""
    if configured:
        return Path(configured)
    key = hashlib.sha1(str(phase_dir.resolve()).encode()).hexdigest()[:12]
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"megameta-heartbeat-{key}"


def node_ranks(rank: int, world: int) -> list[int]:
    """The ranks on this host (one all-gather of host names; collective: every rank calls it)."""
    if world == 1 or not dist.is_initialized():
        return [rank]
    hosts: list = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    return [r for r, h in enumerate(hosts) if h == hosts[rank]]


class Heartbeat:
    """This rank's progress, the watchdog that fails the rank when it stops moving, and the report.

    ``beat`` only records progress in memory (it runs several times per step); the watchdog thread
    writes it to ``<directory>/rank<r>`` when it changed, at most every ``interval_s`` seconds, and
    also while the main thread is stuck (a hung rank's file still shows where it stopped). The
    report reads the files of ``peers`` (default: every rank): with node-local heartbeat dirs, a
    rank's report can only name the ranks of its own node; each node's ranks report their own, so
    a job's logs name every stuck rank whose node is alive, but a node that died entirely is named
    by nobody (the other nodes see "every rank reached the same point").
    """

    def __init__(self, directory: Path, rank: int, world: int, timeout_s: int, interval_s: float = 2.0,
                 peers: list[int] | None = None):  # fmt: skip
        self.dir, self.rank, self.world, self.timeout = Path(directory), rank, world, timeout_s
        self.interval = interval_s
        self.peers = list(range(world)) if peers is None else peers
        self.path = self.dir / f"rank{rank}"
        self.path.unlink(missing_ok=True)  # a previous run's file would claim progress not made
        self.step = 0
        self.in_step = False
        self.progress_at = time.time()
        self.latest: Progress | None = None
        self.written: Progress | None = None

    @classmethod
    def for_run(cls, train, phase_dir: Path, rank: int, world: int) -> Heartbeat:
        """The heartbeat of a training run per ``train`` (a TrainConfig): its dir, interval, timeout,
        and the ranks its report covers (every rank with a configured dir, else this node's)."""
        peers = None if train.heartbeat_dir else node_ranks(rank, world)
        directory = heartbeat_dir(train.heartbeat_dir, phase_dir)
        return cls(directory, rank, world, train.dist_timeout_s, train.heartbeat_s, peers)

    def enter_step(self, step: int) -> None:
        """Optimizer step ``step`` (1-based) begins: the watchdog's clock starts."""
        self.step, self.in_step, self.progress_at = step, True, time.time()

    def beat(self, micro: int, point: str) -> None:
        """Record that this rank reached ``point`` of micro-batch ``micro`` in the current step (in memory)."""
        self.latest = (self.step, micro, POINTS.index(point))
        self.progress_at = time.time()

    def leave_step(self) -> None:
        self.in_step = False

    def flush(self) -> None:
        """Write the latest progress to this rank's file if it changed since the last write."""
        latest = self.latest
        if latest is None or latest == self.written:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(f"{latest[0]} {latest[1]} {latest[2]} {time.time():.0f}\n")
        os.replace(tmp, self.path)  # readers never see a half-written file
        self.written = latest

    def read_all(self) -> dict[int, Progress]:
        progress = {}
        for r in self.peers:
            try:
                fields = (self.dir / f"rank{r}").read_text().split()
                progress[r] = (int(fields[0]), int(fields[1]), int(fields[2]))
            except (OSError, ValueError, IndexError):
                progress[r] = UNKNOWN
        return progress

    def failure_message(self, error: BaseException) -> str:
        """The collective-failure report: this rank, its step, and which ranks (of ``peers``) are behind."""
        self.flush()
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        scope = (
            "" if len(self.peers) == self.world else f" (heartbeats of this node's ranks {self.peers} only)"
        )
        return (
            f"collective failed on rank {self.rank} in step {self.step} after up to "
            f"train.dist_timeout_s={self.timeout}s: {stuck_rank_report(self.read_all())}{scope} [{first}]"
        )

    @contextlib.contextmanager
    def collective_failures_reported(self) -> Iterator[None]:
        """Failures of the process group in the block (a step, the log window's all-reduce, validation,
        a save) become a `MegaMetaError` carrying :meth:`failure_message`; any other exception (out of
        memory, a shape bug) propagates with its own traceback."""
        try:
            yield
        except Exception as e:
            if not isinstance(e, MegaMetaError) and is_collective_failure(e):
                raise MegaMetaError(self.failure_message(e)) from e
            raise

    def start_watchdog(self) -> None:
        threading.Thread(target=self._watch, daemon=True, name="megameta-watchdog").start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(self.interval, self.timeout / 4))
            self.flush()
            if self.in_step and time.time() - self.progress_at > self.timeout:
                msg = self.failure_message(TimeoutError(f"no progress for {self.timeout}s"))
                print(f"megameta train: error: {msg}", file=sys.stderr, flush=True)
                os._exit(1)
