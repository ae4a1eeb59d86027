"""Learning-rate schedules: warm-up, decay shapes, the floor, and the registry's error."""

from __future__ import annotations

import math

import pytest

from megameta.errors import ConfigError
from megameta.train.schedule import SCHEDULES, lr_lambda


def test_warmup_rises_linearly_to_the_peak():
    fn = lr_lambda("linear", warmup_steps=4, total_steps=20)
    assert [fn(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(("name", "mid"), [("linear", 0.5), ("cosine", 0.5), ("constant", 1.0)])
def test_decay_shapes_reach_their_floor(name, mid):
    fn = lr_lambda(name, warmup_steps=0, total_steps=100, min_ratio=0.1)
    assert fn(0) == pytest.approx(1.0)
    assert fn(50) == pytest.approx(0.1 + 0.9 * mid)
    assert fn(100) == pytest.approx(1.0 if name == "constant" else 0.1)
    assert fn(1000) == fn(100)  # held after the end


def test_cosine_follows_half_a_period():
    fn = lr_lambda("cosine", warmup_steps=10, total_steps=110)
    assert fn(10 + 25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_warmup_longer_than_the_run_is_clamped():
    fn = lr_lambda("linear", warmup_steps=50, total_steps=5)
    assert fn(3) == 1.0 and fn(5) == pytest.approx(0.0)  # peak reached before the end, then decayed


def test_unknown_schedule_lists_the_valid_names():
    with pytest.raises(
        ConfigError, match=r"optim.schedule: unknown schedule 'step' \(valid: linear, cosine, constant\)"
    ):
        lr_lambda("step", 0, 10)
    assert set(SCHEDULES) == {"linear", "cosine", "constant"}
