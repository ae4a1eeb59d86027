"""tools/slurm_env.py without a cluster: the paths it prints, the HF freshness test, rank placement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import tiny_config, write_config

from megameta.layout import RunLayout

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from slurm_env import main, ranks_of  # noqa: E402


def slurm_env(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "slurm_env.py"), *args],
        capture_output=True, text=True, cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_config_prints_the_layouts_paths(tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_config(Path("run"), tmp_path / "corpus"))
    out = slurm_env("config", "--config", str(config), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    values = subprocess.run(
        ["bash", "-c", out.stdout + '\nprintf "%s\\n" "$RUN_DIR" "$SHARDS_DIR" "${PHASES[*]}" "${DONE_FILES[1]}" "${REPORT_FILES[1]}"'],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    layout = RunLayout.of(tmp_path / "run")  # the relative run_dir, resolved where the job runs
    assert values == [
        str(layout.root), str(layout.shards), "meta xlingual",
        str(layout.phase("xlingual").done), str(layout.phase("xlingual").report),
    ]  # fmt: skip


def test_converted_is_the_pipelines_freshness_test(tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", tmp_path / "corpus"))
    phase = RunLayout.of(tmp_path / "run").phase("xlingual")

    def converted() -> (
        int
    ):  # in this process: the pipeline module imports torch, seconds per fresh interpreter
        return main(["converted", "--config", str(config), "--phase", "xlingual"])

    assert converted() == 1  # nothing there
    phase.dir.mkdir(parents=True)
    phase.done.write_text(json.dumps({"tag": "step_00000004"}))
    assert converted() == 1  # trained, not converted
    phase.hf.mkdir()
    (phase.hf / "megameta_provenance.json").write_text(json.dumps({"tag": "step_00000002"}))
    assert converted() == 1  # converted from an older checkpoint
    (phase.hf / "megameta_provenance.json").write_text(json.dumps({"tag": "step_00000004"}))
    assert converted() == 0
    bad = slurm_env("converted", "--config", str(config), "--phase", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "nope" in bad.stderr  # bad input: exit 2 naming it


def test_ranks_of_follows_slurms_block_distribution():
    assert [ranks_of(i, 2, 16) for i in range(2)] == [list(range(8)), list(range(8, 16))]
    assert [ranks_of(i, 3, 7) for i in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert ranks_of(1, 2, 2) == [1]
