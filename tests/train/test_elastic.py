"""Resume on another world size, any ZeRO stage: the optimizer state after the re-shard is the saved one.

Each case trains 2 steps, loads that checkpoint on another number of ranks and saves it again at once
(tests/train/resave.py); the two checkpoints' consolidated fp32 master weights, Adam moments, step counts
and per-group hyperparameters must be equal exactly. The per-group comparison is what catches DeepSpeed
0.19's ZeRO-3 universal load giving every group group 0's weight decay (megameta/train/reshard.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO, cli_env, make_run, train

from megameta import checkpoint as ckpt
from megameta.checkpoint import optimizer_state
from megameta.train.dist import free_port

pytestmark = pytest.mark.slow


def _batch(world: int) -> str:
    return f"train.grad_accum={2 if world == 1 else 1}"  # 8 sequences per step on 1 or 2 ranks, 12 on 3


def resave(config, world: int, out, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
           str(free_port()), str(REPO / "tests" / "train" / "resave.py"), str(config), str(out), *overrides]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def assert_same_optimizer_state(saved, resaved) -> None:
    a, b = optimizer_state(saved), optimizer_state(resaved)
    assert b["param_groups"] == a["param_groups"], (
        "per-group hyperparameters changed (lr, weight_decay, betas, eps)"
    )
    # The no-decay group (biases, LayerNorm) stays so, and the lr is the saved one.
    assert a["param_groups"][1]["weight_decay"] == 0.0 and a["param_groups"][0]["lr"] > 0
    assert b["step"] == a["step"]
    for what in ("fp32", "exp_avg", "exp_avg_sq"):
        assert a[what].keys() == b[what].keys()
        changed = [k for k in a[what] if not bool((a[what][k] == b[what][k]).all())]
        assert not changed, f"{what} differs for {changed[:3]}"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_resume_on_another_world_size_restores_optimizer_state_exactly(prepared, tmp_path, stage, precision):
    """Shrink 2 -> 1, grow 1 -> 2 and 2 -> 3: each re-shard keeps the saved optimizer state exactly.

    The 1-rank checkpoint that is grown back to 2 ranks is the one the 2 -> 1 re-shard saved, so one
    training launch and three re-saves cover the three directions."""
    settings = {"deepspeed_config": f"ds_configs/zero{stage}.json", "precision": precision}
    common = ("phases[0].steps=2", "optim.schedule=constant")  # lr stays > 0: its restore is checked too
    two, two_cfg = make_run(prepared, tmp_path, "two", **settings)
    one, one_cfg = make_run(prepared, tmp_path, "one", **settings)
    train(two_cfg, 2, *common, _batch(2))
    tag = ckpt.tag_for(2)
    saved = two / "meta" / "checkpoints"
    cases = [  # config whose newest checkpoint is loaded, its world size, the new one, where it is saved
        (two_cfg, 2, 1, one / "meta" / "checkpoints"),
        (one_cfg, 1, 2, tmp_path / "grown_from_1"),
        (two_cfg, 2, 3, tmp_path / "grown_from_2"),
    ]
    for cfg, before, after, out in cases:
        proc = resave(cfg, after, out, *common, _batch(after))
        assert f"world size changed ({before} -> {after})" in proc.stdout
        assert_same_optimizer_state(saved / tag, out / tag)
