"""Fixtures for the SLURM template tests: a real two-node cluster started once for the session."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import ClusterUnavailable, NamespaceCluster, ensure_packages  # noqa: E402


@pytest.fixture(scope="session")
def slurm_packages():
    """The SLURM, munge and shellcheck binaries (installed with apt-get when missing)."""
    try:
        if os.geteuid() != 0:
            if shutil.which("shellcheck") and shutil.which("sbatch"):
                return
            raise ClusterUnavailable("installing slurm/munge/shellcheck with apt-get needs root (not root)")
        ensure_packages()
    except ClusterUnavailable as e:
        pytest.skip(f"SLURM test cluster unavailable on this machine: {e}")


@pytest.fixture(scope="session")
def slurm_cluster(slurm_packages):
    """Two SLURM nodes (``mmn1``, ``mmn2``; 2 CPUs each), each in network namespaces of its own.

    Shared by every SLURM test of the session; jobs asking for one node run on one of them.
    Stopped after the session, also when a test failed: daemons by pid, then the namespaces,
    links and bridge.
    """
    # Not under pytest's tmp dir: that is private to root, and munged (user munge) must reach its
    # socket dir; a short path also keeps the socket path within the 108-byte limit.
    root = Path(tempfile.mkdtemp(prefix="megameta-slurm-"))
    root.chmod(0o755)
    cluster = NamespaceCluster(root, cpus=2, nodes=2)
    try:
        cluster.start()
    except ClusterUnavailable as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"SLURM test cluster unavailable on this machine: {e}")
    _seed_torch_extensions(root / "torch_extensions")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _seed_torch_extensions(target: Path) -> None:
    """Start the session's TORCH_EXTENSIONS_DIR from ops already built in the default cache.

    The jobs get a dir of their own (DeepSpeed rebuilds an op whose flags differ, and a build lock
    left by a killed node would block every later job), but building DeepSpeed's shared-memory op
    takes 45-65 s: reuse a finished build (its .so present; never a lock file) when there is one.
    """
    # With TORCH_EXTENSIONS_DIR set, torch builds op X in $TORCH_EXTENSIONS_DIR/X; without, in
    # ~/.cache/torch_extensions/py<ver>_<cpu|cuXY>/X.
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        built = Path(os.environ["TORCH_EXTENSIONS_DIR"]).glob("*/*.so")
    else:
        built = (Path.home() / ".cache" / "torch_extensions").glob("*/*/*.so")
    for so in built:
        dest = target / so.parent.name
        if not dest.exists():
            shutil.copytree(so.parent, dest, ignore=shutil.ignore_patterns("lock"))
