"""ZeRO-3 builds the model under ``deepspeed.zero.Init`` (``train/build.py::build_model``): no rank
holds the whole model while it is built, the initial weights equal an unpartitioned build's, and the
phase hand-off loads into the partitioned parameters."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env, save_hf_model

from megameta.model import ModelConfig
from megameta.train.dist import free_port

pytestmark = pytest.mark.slow
PROBE = Path(__file__).with_name("zero_init_probe.py")
# A fixed mmap threshold makes glibc return freed tensors to the OS at once, so RSS measures what a
# process holds rather than what the allocator keeps cached (both builds are measured the same way).
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _probe(tmp_path: Path, ranks: int, *args: str) -> list[dict]:
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
               "--master_port", str(free_port()), str(PROBE), *args]  # fmt: skip
    else:
        cmd = [sys.executable, str(PROBE), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(**ENV), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = proc.stdout.replace("}{", "}\n{").splitlines()  # two ranks may write on one line
    rows = [json.loads(line) for line in lines if line.startswith('{"rank"')]
    assert sorted(r["rank"] for r in rows) == list(range(ranks)), proc.stdout[-2000:]
    return rows


def test_zero3_build_keeps_each_rank_below_the_full_model(tmp_path):
    """335M parameters (1.35 GB in fp32) on 2 ranks: each holds half and never grows by the whole
    model while building it; the same build without partitioning does (the measure can fail)."""
    ranks = _probe(tmp_path, 2, "size", "3")
    (whole,) = _probe(tmp_path, 1, "size", "0")
    full = 4 * whole["params"]
    assert whole["params"] >= 300_000_000 and whole["growth"] >= full
    for r in ranks:
        assert r["params"] == whole["params"] and r["held"] == whole["params"] // 2
        assert r["growth"] < full, (
            f"rank {r['rank']} grew by {r['growth'] / 1e9:.2f} GB, model {full / 1e9:.2f} GB"
        )


def test_zero3_init_is_bit_identical_and_the_handoff_loads_into_partitions(tmp_path):
    tiny = ModelConfig(preset="custom", vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                       intermediate_size=128)  # fmt: skip
    good, bad = tmp_path / "good", tmp_path / "bad"
    save_hf_model(good, tiny, seed=3)
    save_hf_model(bad, dataclasses.replace(tiny, vocab_size=1200), seed=3)
    rows = _probe(tmp_path, 2, "tiny", str(good), str(bad))
    for r in rows:
        assert r["partitioned"] and r["init_identical"] and r["decay_groups_same"], r
        assert r["handoff_equal"] and r["digest_ok"], r
        assert "has shape [1200" in r["bad_error"] and "but the model needs [1000" in r["bad_error"], r
        assert str(bad) in r["bad_error"]
