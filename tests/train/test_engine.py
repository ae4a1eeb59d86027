"""Training engine with real launchers and 2 CPU ranks: ZeRO stages, exact resume, signals, fallbacks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, cli_env, free_port, megameta, tiny_config, write_config

from megameta.convert import load_weights, state_dict_digest
from megameta.errors import EXIT_REQUEUE
from megameta.train import checkpoint as ckpt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_corpus):
    """Tokenizer + shards built once; each test's run dir links to them."""
    root = tmp_path_factory.mktemp("prepared")
    cfg = tiny_config(root / "run", tiny_corpus)
    path = write_config(root / "c.yaml", cfg)
    for verb in ("tokenizer", "preprocess"):
        proc = megameta(verb, "--config", str(path))
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"run": root / "run", "corpus": tiny_corpus}


def make_run(prepared, tmp_path: Path, name: str = "run", **train) -> tuple[Path, Path]:
    run = tmp_path / name
    run.mkdir()
    for part in ("tokenizer", "shards"):
        (run / part).symlink_to(prepared["run"] / part)
    cfg = tiny_config(run, prepared["corpus"])
    cfg["train"].update({"log_every": 1, "save_every": 2, "keep_last": 3, **train})
    cfg["phases"][0]["steps"] = 6
    return run, write_config(tmp_path / f"{name}.yaml", cfg)


def train_cmd(config: Path, nproc: int, *overrides: str, launcher: str = "torchrun") -> list[str]:
    args = ["train", "--config", str(config), "--phase", "meta", *overrides]
    if launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(free_port()),
            "-m",
            "megameta.cli",
            *args,
        ]
    if launcher == "deepspeed":
        return [
            str(Path(sys.executable).parent / "deepspeed"),
            "--num_gpus",
            str(nproc),
            "--master_port",
            str(free_port()),
            "--module",
            "megameta.cli",
            *args,
        ]
    if launcher == "mpirun":
        return [str(Path(sys.executable).parent / "mpirun"), "-np", str(nproc), "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo",
                "-x", f"MASTER_PORT={free_port()}", "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS", sys.executable, "-m", "megameta.cli", *args]  # fmt: skip
    return [sys.executable, "-m", "megameta.cli", *args]


def train(
    config: Path, nproc: int = 2, *overrides: str, launcher: str = "torchrun", check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        train_cmd(config, nproc, *overrides, launcher=launcher),
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "meta" / "train_log.jsonl").read_text().splitlines()]


def final_digest(run: Path) -> str:
    return state_dict_digest(load_weights(run / "meta")[0])


def test_zero_stages_match_single_rank(prepared, tmp_path):
    """Each ZeRO stage on 2 ranks gives the loss of 1 rank accumulating the same global batch."""
    no_dropout = ("model.hidden_dropout=0", "model.attention_dropout=0")
    ref_run, ref_cfg = make_run(prepared, tmp_path, "ref")
    train(ref_cfg, 1, "train.grad_accum=2", "train.deepspeed_config=ds_configs/zero0.json", *no_dropout)
    ref = [r["loss"] for r in log_rows(ref_run)]
    assert len(ref) == 6 and ref[-1] < ref[0]
    for stage in (0, 1, 2, 3):
        run, cfg = make_run(prepared, tmp_path, f"zero{stage}")
        train(cfg, 2, f"train.deepspeed_config=ds_configs/zero{stage}.json", *no_dropout)
        losses = [r["loss"] for r in log_rows(run)]
        assert losses == pytest.approx(ref, rel=2e-4), f"ZeRO-{stage}"
        assert (
            json.loads((run / "meta" / "ds_config.json").read_text())["zero_optimization"]["stage"] == stage
        )


def _rank_pids(root: int) -> list[int]:
    """Descendants of ``root`` that run `megameta.cli train` (the ranks, not the launcher)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for child in map(int, children):
            todo.append(child)
            cmdline = (
                Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                if Path(f"/proc/{child}/cmdline").exists()
                else b""
            )
            if b"megameta.cli" in cmdline and b"deepspeed.launcher" not in cmdline:
                out.append(child)
    return out


def _kill_when(proc: subprocess.Popen, run: Path, step: int, sig: int, group: bool) -> None:
    log = run / "meta" / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(
            json.loads(line)["step"] >= step for line in log.read_text().splitlines() if line.strip()
        ):
            if group:
                os.killpg(proc.pid, sig)
            else:  # the rank processes only, as SLURM's `srun --signal` / `scancel --signal` deliver it
                for pid in _rank_pids(proc.pid):
                    os.kill(pid, sig)
            return
        time.sleep(0.05)
    raise AssertionError(f"run never reached step {step}")


@pytest.mark.parametrize("stage", [1, 3])
def test_kill9_then_resume_is_bit_exact(prepared, tmp_path, stage):
    ref_run, ref_cfg = make_run(prepared, tmp_path, "ref", deepspeed_config=f"ds_configs/zero{stage}.json")
    train(ref_cfg, 2)
    run, cfg = make_run(prepared, tmp_path, "killed", deepspeed_config=f"ds_configs/zero{stage}.json")
    kill_step = random.Random(stage).randint(3, 5)
    proc = subprocess.Popen(
        train_cmd(cfg, 2),
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _kill_when(proc, run, kill_step, signal.SIGKILL, group=True)
    proc.wait(timeout=60)
    assert not (run / "meta" / "DONE.json").exists()
    resumed = train(cfg, 2)
    assert "[train] resumed meta from step_" in resumed.stdout
    assert log_rows(run) == log_rows(ref_run)  # identical loss trajectory, bit for bit
    assert final_digest(run) == final_digest(ref_run)


def test_sigterm_saves_checkpoint_and_exits_with_requeue_code(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path, save_every=100)
    proc = subprocess.Popen(
        train_cmd(cfg, 2, "phases[0].steps=200", launcher="deepspeed"),
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _kill_when(proc, run, 2, signal.SIGTERM, group=False)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, out[-3000:]
    root = run / "meta" / "checkpoints"
    tag = (root / "latest").read_text().strip()
    assert ckpt.validate(root / tag) is None
    assert 2 <= ckpt.step_of(tag) < 100
    assert not list(root.glob(".staging-*"))
    resumed = train(cfg, 2, "phases[0].steps=" + str(ckpt.step_of(tag) + 1))
    assert f"resumed meta from {tag}" in resumed.stdout


def test_corrupted_newest_checkpoint_falls_back(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path)
    train(cfg, 2, "phases[0].steps=4")
    root = run / "meta" / "checkpoints"
    assert ckpt.list_tags(root) == ["step_00000002", "step_00000004"]
    victim = next(p for p in sorted((root / "step_00000004").rglob("*.pt")))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    proc = train(cfg, 2, "phases[0].steps=6")
    assert "skipping step_00000004" in proc.stdout and "checksum mismatch" in proc.stdout
    assert "resumed meta from step_00000002" in proc.stdout
    assert [r["step"] for r in log_rows(run)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_on_fewer_ranks_continues_the_data_stream(prepared, tmp_path, stage):
    """2 ranks stopped by SIGTERM, resumed on 1 rank (ZeRO state re-sharded through a universal checkpoint)."""
    common = (
        "model.hidden_dropout=0",
        "model.attention_dropout=0",
        f"train.deepspeed_config=ds_configs/zero{stage}.json",
        "phases[0].steps=30",
    )
    ref_run, ref_cfg = make_run(prepared, tmp_path, "ref", save_every=100)
    train(ref_cfg, 2, *common)
    run, cfg = make_run(prepared, tmp_path, "shrink", save_every=100)
    proc = subprocess.Popen(
        train_cmd(cfg, 2, *common),
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _kill_when(proc, run, 2, signal.SIGTERM, group=False)
    proc.wait(timeout=120)
    stopped = ckpt.step_of((run / "meta" / "checkpoints" / "latest").read_text().strip())
    assert 2 <= stopped < 30
    resumed = train(cfg, 1, "train.grad_accum=2", *common)
    assert "world size changed (2 -> 1)" in resumed.stdout
    rows, ref = log_rows(run), log_rows(ref_run)
    assert [r["samples_seen"] for r in rows] == [r["samples_seen"] for r in ref]
    assert [r["lr"] for r in rows] == pytest.approx([r["lr"] for r in ref])
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], rel=2e-4)


def test_zero3_resume_on_other_world_size_is_refused_clearly(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path, deepspeed_config="ds_configs/zero3.json")
    train(cfg, 2, "phases[0].steps=2")
    proc = train(cfg, 1, "phases[0].steps=4", "train.grad_accum=2", check=False)
    assert proc.returncode != 0
    assert "resuming ZeRO-3 on 1 ranks (saved on 2) is not supported" in proc.stderr


def test_conflicting_batch_settings_are_refused(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path, global_batch_size=12)
    proc = train(cfg, 2, check=False)
    assert proc.returncode != 0
    assert (
        "train.global_batch_size: 12 != micro_batch_size (4) * grad_accum (1) * world size (2) = 8"
        in proc.stdout + proc.stderr
    )


@pytest.mark.parametrize("launcher", ["deepspeed", "mpirun"])
def test_other_launchers_train(prepared, tmp_path, launcher):
    run, cfg = make_run(prepared, tmp_path)
    proc = train(cfg, 2, "phases[0].steps=2", launcher=launcher)
    assert "world 2" in proc.stdout
    assert json.loads((run / "meta" / "DONE.json").read_text())["step"] == 2


def test_fp16_is_refused_clearly_where_unsupported(prepared, tmp_path):
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().is_fp16_supported():
        pytest.skip("this accelerator supports fp16")
    run, cfg = make_run(prepared, tmp_path, precision="fp16")
    proc = megameta("train", "--config", str(cfg), "--phase", "meta")
    assert proc.returncode == 2
    assert "train.precision: fp16 is not supported by this accelerator" in proc.stderr
