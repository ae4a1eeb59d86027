"""The phase hand-off (``load_init_weights``) into an unpartitioned model: the weights as loaded, the
recorded digest, and clear errors naming the source. The ZeRO-3 case is in ``test_zero_init.py``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import save_hf_model

from megameta.checkpoint import state_dict_digest
from megameta.config import InitFrom
from megameta.errors import InputError
from megameta.model import ModelConfig, XLMRForMaskedLM
from megameta.train.checkpointer import load_init_weights

TINY = ModelConfig(
    preset="custom", vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
)


def test_handoff_loads_the_weights_and_records_their_digest(tmp_path):
    source = save_hf_model(tmp_path / "hf", TINY, seed=1)
    torch.manual_seed(2)
    model = XLMRForMaskedLM(TINY)
    logged: list[str] = []
    done = load_init_weights(model, InitFrom(path=tmp_path / "hf", phase=None), "xlingual", logged.append)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], source[k]) for k in source)
    assert done == {"source": str(tmp_path / "hf"), "weights_sha256": state_dict_digest(loaded)}
    assert logged == [
        f"[train] xlingual: initialized from {tmp_path / 'hf'} (weights sha256 {done['weights_sha256'][:12]})"
    ]


def test_handoff_errors_name_the_source_and_what_is_wrong(tmp_path):
    save_hf_model(tmp_path / "big", dataclasses.replace(TINY, vocab_size=400), seed=1)
    model = XLMRForMaskedLM(TINY)
    with pytest.raises(InputError, match=r"big: .* has shape \[400.*but the model needs \[300"):
        load_init_weights(model, InitFrom(path=tmp_path / "big", phase=None), "xlingual", print)
    with pytest.raises(
        InputError, match=r"phases: xlingual.init_from: .*meta does not exist \(train phase 'meta' first\)"
    ):
        load_init_weights(model, InitFrom(path=tmp_path / "meta", phase="meta"), "xlingual", print)
