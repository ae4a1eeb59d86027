"""`megameta plan` against a real run: the session's tiny two-phase pipeline (2 DeepSpeed ranks)."""

from __future__ import annotations

import json

import pytest
from helpers import REPO

from megameta.config import load_config
from megameta.plan import run_plan


@pytest.mark.slow
def test_plan_agrees_with_what_the_pipeline_did(tiny_pipeline, monkeypatch):
    monkeypatch.chdir(REPO)
    run = tiny_pipeline["run"]
    cfg = load_config(str(tiny_pipeline["config"]))
    text, error = run_plan(cfg, nodes=1, gpus_per_node=cfg.launch.nproc, as_json=True)
    assert error is None, text
    plan = json.loads(text)
    assert {p["name"] for p in plan["phases"]} == set(tiny_pipeline["done"])
    for phase in plan["phases"]:
        done = tiny_pipeline["done"][phase["name"]]
        assert phase["steps"] == done["step"]
        # The trainer counts non-padding tokens; packed sequences are full, so within 10%.
        assert abs(phase["tokens"] - done["tokens"]) <= 0.10 * phase["tokens"], (phase, done)
        kept, size = _newest_checkpoint_bytes(run / phase["name"])
        assert kept == phase["checkpoints_kept"]
        assert abs(size - plan["checkpoint"]["total"]) <= 0.10 * size, (size, plan["checkpoint"])
    manifest = json.loads((run / "shards" / "manifest.json").read_text())["languages"]
    for row in plan["data"]:
        assert row["status"] == "shards" and row["tokens"] == manifest[row["lang"]]["train"]["tokens"]
        assert row["tokens_needed"] > 0 and row["epochs"] == pytest.approx(
            row["tokens_needed"] / row["tokens"]
        )


def _newest_checkpoint_bytes(phase_dir) -> tuple[int, int]:
    tags = sorted(p for p in (phase_dir / "checkpoints").glob("step_*") if p.is_dir())
    return len(tags), sum(f.stat().st_size for f in tags[-1].rglob("*") if f.is_file())


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_checkpoint_size_per_zero_stage(zero_runs, stage, monkeypatch):
    """The checkpoint model (weights in the module file, none under ZeRO-3; fp32 master + Adam) per stage."""
    monkeypatch.chdir(REPO)
    config = zero_runs["root"] / f"zero{stage}.yaml"
    cfg = load_config(str(config), [f"train.deepspeed_config=ds_configs/zero{stage}.json"])
    plan = json.loads(run_plan(cfg, nodes=1, gpus_per_node=2, as_json=True)[0])
    kept, size = _newest_checkpoint_bytes(zero_runs["runs"][stage] / "meta")
    assert kept == plan["phases"][0]["checkpoints_kept"]
    assert abs(size - plan["checkpoint"]["total"]) <= 0.10 * size, (stage, size, plan["checkpoint"])
