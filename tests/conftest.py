"""Session fixtures shared across the suite: one tiny two-phase run that several tests inspect."""

from __future__ import annotations

import json

import pytest
from helpers import NO_DROPOUT, make_corpus, make_run, megameta, tiny_config, train, write_config


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_corpus):
    """`megameta pipeline --with-baseline` end to end (2 DeepSpeed ranks on CPU) on the tiny corpus, then
    grown to a 2-seed experiment with ``--seeds 2``; run once per session."""
    root = tmp_path_factory.mktemp("pipeline")
    cfg = tiny_config(root / "run", tiny_corpus)
    config_path = write_config(root / "config.yaml", cfg)
    procs = []
    for seeds in ("1", "2"):
        proc = megameta(
            "pipeline", "--config", str(config_path), "--with-baseline", "--seeds", seeds, timeout=900
        )
        if proc.returncode != 0:
            pytest.fail(
                f"tiny pipeline (--seeds {seeds}) failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        procs.append(proc)
    return {"root": root, "run": root / "run", "config": config_path, "cfg": cfg, "proc": procs[0], "grown": procs[1],
            "done": {p: json.loads((root / "run" / p / "DONE.json").read_text()) for p in ("meta", "xlingual", "baseline")}}  # fmt: skip


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_corpus):
    """Tokenizer + shards built once; each test's run dir links to them."""
    root = tmp_path_factory.mktemp("prepared")
    cfg = tiny_config(root / "run", tiny_corpus)
    path = write_config(root / "c.yaml", cfg)
    for verb in ("tokenizer", "preprocess"):
        proc = megameta(verb, "--config", str(path))
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"run": root / "run", "corpus": tiny_corpus, "config": path}


@pytest.fixture(scope="session")
def zero_runs(tmp_path_factory, prepared):
    """One 6-step, 2-rank fp32 run per ZeRO stage 0-3: same seed, no dropout, checkpoints every 2 steps.

    Shared by the stage-equivalence test (their losses) and the converter tests (their checkpoints).
    """
    root = tmp_path_factory.mktemp("zero_runs")
    runs = {}
    for stage in (0, 1, 2, 3):
        run, cfg = make_run(prepared, root, f"zero{stage}")
        train(cfg, 2, f"train.deepspeed_config=ds_configs/zero{stage}.json", *NO_DROPOUT)
        runs[stage] = run
    return {"root": root, "runs": runs}
