"""Fixtures for the SLURM template tests: a real one-node cluster started for the session."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import ClusterUnavailable, SlurmCluster, ensure_packages  # noqa: E402


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
    """munged + slurmctld + slurmd on this machine (one node, 2 CPUs); stopped after the session."""
    # Not under pytest's tmp dir: that is private to root, and munged (user munge) must reach its
    # socket dir; a short path also keeps the socket path within the 108-byte limit.
    root = Path(tempfile.mkdtemp(prefix="megameta-slurm-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root, cpus=2)
    try:
        cluster.start()
    except ClusterUnavailable as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"SLURM test cluster unavailable on this machine: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
