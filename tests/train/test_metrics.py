"""Throughput scalars: MFU and model TFLOP/s from the configured mask probability, when a peak is known."""

from __future__ import annotations

import pytest
import torch

from megameta.layout import RunLayout
from megameta.model import ModelConfig, flops_per_token
from megameta.train.metrics import MetricLogger

CFG = ModelConfig(
    preset="custom", vocab_size=32000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128
)


def _window_scalars(tmp_path, mask_prob: float) -> dict[str, float]:
    log = MetricLogger(RunLayout.of(tmp_path).phase("meta"), True, False, total_steps=10)
    (tmp_path / "meta").mkdir(parents=True, exist_ok=True)
    log.describe_system(torch.device("cpu"), CFG, 128, 2, mask_prob)
    seen: dict[str, float] = {}
    log.scalars = lambda values, step: seen.update(values)
    log.start_window()
    sums = torch.tensor([[30.0], [10.0]], dtype=torch.float64)
    log.log_window(5, ["en"], sums, 4096, 32, {"train/lr": 1e-4}, {"step": 5, "tokens_seen": 4096})
    return seen


def test_mfu_and_model_tflops_are_logged_from_the_mask_probability(tmp_path, monkeypatch):
    monkeypatch.setenv("MEGAMETA_PEAK_TFLOPS", "100")
    low, high = _window_scalars(tmp_path / "a", 0.15), _window_scalars(tmp_path / "b", 0.4)
    for seen, p in ((low, 0.15), (high, 0.4)):
        tok_s = seen["train/tokens_per_s"]
        assert seen["system/model_tflops"] == pytest.approx(flops_per_token(CFG, 128, p) * tok_s / 1e12)
        assert seen["system/mfu"] == pytest.approx(seen["system/model_tflops"] / (100 * 2))
    # the head's share grows with the mask probability: 0.4 is not silently computed as 0.15
    per_token = {
        k: s["system/model_tflops"] / s["train/tokens_per_s"] for k, s in (("low", low), ("high", high))
    }
    assert per_token["high"] > per_token["low"] * 1.05


def test_no_mfu_without_a_known_peak(tmp_path, monkeypatch):
    monkeypatch.delenv("MEGAMETA_PEAK_TFLOPS", raising=False)
    seen = _window_scalars(tmp_path, 0.15)
    assert "system/model_tflops" in seen and "system/mfu" not in seen
