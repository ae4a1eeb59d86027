"""Training engine with real launchers and 2 CPU ranks: ZeRO stages, exact resume, signals, fallbacks."""

from __future__ import annotations

import json
import random
import signal

import pytest
from helpers import (
    NO_DROPOUT,
    assert_gone,
    final_digest,
    kill_when,
    log_rows,
    make_run,
    megameta,
    start_train,
    train,
)

from megameta import checkpoint as ckpt
from megameta.checkpoint import optimizer_state
from megameta.errors import EXIT_REQUEUE

pytestmark = pytest.mark.slow


def test_zero_stages_match_single_rank(prepared, tmp_path, zero_runs):
    """Each ZeRO stage on 2 ranks gives the loss of 1 rank accumulating the same global batch."""
    ref_run, ref_cfg = make_run(prepared, tmp_path, "ref")
    train(ref_cfg, 1, "train.grad_accum=2", "train.deepspeed_config=ds_configs/zero0.json", *NO_DROPOUT)
    ref = [r["loss"] for r in log_rows(ref_run)]
    assert len(ref) == 6 and ref[-1] < ref[0]
    for stage, run in zero_runs["runs"].items():
        losses = [r["loss"] for r in log_rows(run)]
        assert losses == pytest.approx(ref, rel=2e-4), f"ZeRO-{stage}"
        assert (
            json.loads((run / "meta" / "ds_config.json").read_text())["zero_optimization"]["stage"] == stage
        )


# ZeRO-1 fp32 is covered by tests/reliability (kill -9 of one rank, of all ranks, during a save).
# The offload templates step the optimizer with DeepSpeed's CPU Adam op (JIT-built on first use,
# ~40 s, cached in ~/.cache/torch_extensions): ZeRO-2 optimizer offload, ZeRO-3 parameter + optimizer.
@pytest.mark.parametrize(
    ("stage", "precision"),
    [(3, "fp32"), (0, "bf16"), (2, "bf16"), ("2_offload", "fp32"), ("3_offload", "fp32")],
)
def test_kill9_then_resume_is_bit_exact(prepared, tmp_path, stage, precision):
    if str(stage).endswith("offload"):
        from deepspeed.ops.op_builder import CPUAdamBuilder

        if not CPUAdamBuilder().is_compatible(verbose=False):
            pytest.skip("DeepSpeed's cpu_adam op cannot be built here (no C++ compiler / Python headers)")
    settings = {"deepspeed_config": f"ds_configs/zero{stage}.json", "precision": precision}
    ref_run, ref_cfg = make_run(prepared, tmp_path, "ref", **settings)
    train(ref_cfg, 2)
    run, cfg = make_run(prepared, tmp_path, "killed", **settings)
    # At least two steps before the end: a kill after the last logged step can land after DONE.json.
    kill_step = random.Random(stage).randint(3, 4)
    proc = start_train(cfg, 2)
    ranks = kill_when(proc, run, kill_step, signal.SIGKILL, group=True)
    proc.wait(timeout=60)
    assert_gone(ranks)  # torchrun starts ranks in sessions of their own: they die with it (PDEATHSIG)
    assert not (run / "meta" / "DONE.json").exists()
    resumed = train(cfg, 2)
    assert "[train] resumed meta from step_" in resumed.stdout
    assert log_rows(run) == log_rows(ref_run)  # identical loss trajectory, bit for bit
    assert final_digest(run) == final_digest(ref_run)


def test_sigterm_saves_checkpoint_and_exits_with_requeue_code(prepared, tmp_path):
    run, cfg = make_run(prepared, tmp_path, save_every=100)
    proc = start_train(cfg, 2, "phases[0].steps=200", launcher="deepspeed", output=True)
    kill_when(proc, run, 2, signal.SIGTERM, group=False)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, out[-3000:]
    root = run / "meta" / "checkpoints"
    tag = (root / "latest").read_text().strip()
    assert ckpt.check_integrity(root / tag) is None
    assert 2 <= ckpt.step_of(tag) < 100
    assert not list(root.glob(".staging-*"))
    resumed = train(cfg, 2, "phases[0].steps=" + str(ckpt.step_of(tag) + 1))
    assert f"resumed meta from {tag}" in resumed.stdout


# ZeRO-1 re-shards like ZeRO-2; its exact optimizer state is checked in tests/train/test_elastic.py.
@pytest.mark.parametrize("stage", [2, 3])
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
    proc = start_train(cfg, 2, *common)
    kill_when(proc, run, 2, signal.SIGTERM, group=False)
    proc.wait(timeout=120)
    stopped = ckpt.step_of((run / "meta" / "checkpoints" / "latest").read_text().strip())
    assert 2 <= stopped < 30
    resumed = train(cfg, 1, "train.grad_accum=2", *common)
    assert "world size changed (2 -> 1)" in resumed.stdout
    rows, ref = log_rows(run), log_rows(ref_run)
    assert [r["samples_seen"] for r in rows] == [r["samples_seen"] for r in ref]
    assert [r["lr"] for r in rows] == pytest.approx([r["lr"] for r in ref])
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], rel=2e-4)
    # One Adam step per optimizer step after the re-shard (DeepSpeed's ZeRO-3 loader shared one counter).
    assert optimizer_state(run / "meta" / "checkpoints" / ckpt.tag_for(30))["step"] == [30.0, 30.0]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("data.seed=99", "data.seed"),
        ("phases[0].alpha=0.7", "phases[0].alpha"),
        ("data.max_seq_len=24", "data.max_seq_len"),
    ],
)
def test_resume_on_another_sample_stream_is_refused_naming_the_field(zero_runs, override, field):
    """A finished 2-rank run resumed in one process with a changed stream setting: exit 2, field named."""
    config = zero_runs["root"] / "zero0.yaml"
    proc = train(config, 1, "train.deepspeed_config=ds_configs/zero0.json", *NO_DROPOUT, override,
                 launcher="none", check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {field}: " in proc.stderr and "different sample stream" in proc.stderr


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


def test_evaluation_suite_runs_during_training_and_logs_to_tensorboard(prepared, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, cfg = make_run(prepared, tmp_path, eval_suite_every=2)
    proc = train(cfg, 2, "phases[0].steps=2", "evaluate.classify_seeds=[1]")
    assert "evaluation suite at step 2" in proc.stdout
    report = run / "meta" / "eval_suite" / "step_00000002" / "report.json"
    assert {"mlm", "retrieval", "classify"} <= set(json.loads(report.read_text())["results"])
    acc = EventAccumulator(str(run / "meta" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"eval/mlm_loss_en", "eval/retrieval_mean", "eval/topic_accuracy_fr"} <= tags
