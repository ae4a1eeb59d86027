"""Fault-injection spec parsing and the loss faults the divergence guard is tested with (no training)."""

from __future__ import annotations

import math

import pytest
import torch

from megameta.errors import ConfigError
from megameta.train.faults import Fault, FaultInjector, parse


def test_loss_faults_parse_and_only_at_forward():
    assert parse("nan@forward:3:1,spike@forward:5") == [
        Fault("nan", "forward", 3, 1),
        Fault("spike", "forward", 5, None),
    ]
    with pytest.raises(ConfigError, match="nan and spike only at forward"):
        parse("nan@save:3")


def test_loss_fault_hits_its_rank_and_step_once(monkeypatch):
    monkeypatch.setenv("MEGAMETA_FAULT", "nan@forward:3:1,spike@forward:4")
    one, zero = FaultInjector(1), FaultInjector(0)
    loss = torch.tensor(2.0)
    assert zero.corrupt_loss(loss, 3) == 2.0 and one.corrupt_loss(loss, 2) == 2.0
    assert math.isnan(one.corrupt_loss(loss, 3)) and math.isnan(
        one.corrupt_loss(loss, 3)
    )  # every micro-batch
    one.end_step()
    assert one.corrupt_loss(loss, 3) == 2.0  # a rolled-back replay of step 3 reads other data
    assert zero.corrupt_loss(loss, 4) == 2000.0
    zero("forward", 4)  # loss faults send no signal
