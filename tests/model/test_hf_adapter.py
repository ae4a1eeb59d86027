"""The one ModelConfig <-> Hugging Face mapping: config.json written without transformers, shape checks."""

from __future__ import annotations

import json

import pytest
import torch

from megameta.errors import ConfigError, InputError
from megameta.model import ModelConfig, XLMRForMaskedLM, to_hf_config
from megameta.model.hf_adapter import TIED, check_shapes, expected_shapes, hf_config_dict

TINY = ModelConfig(preset="custom", vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                   intermediate_size=32, max_position_embeddings=24)  # fmt: skip


def test_config_json_reads_back_in_transformers_as_to_hf_config(tmp_path):
    from transformers import AutoConfig

    d = hf_config_dict(TINY, "bf16")
    assert d["dtype"] == "bfloat16" and d["architectures"] == ["XLMRobertaForMaskedLM"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    got, want = AutoConfig.from_pretrained(str(tmp_path)).to_dict(), to_hf_config(TINY).to_dict()
    assert all(got[k] == want[k] for k in d if k not in ("architectures", "dtype", "transformers_version"))
    with pytest.raises(ConfigError, match="model.vocab_size: must be set"):
        hf_config_dict(ModelConfig())


def test_expected_shapes_are_the_models_stored_tensors():
    model = XLMRForMaskedLM(TINY)
    want = {k: v.shape for k, v in model.state_dict().items() if k not in TIED}
    assert expected_shapes(TINY) == want and "roberta.embeddings.word_embeddings.weight" in want


def test_check_shapes_names_the_first_bad_tensor():
    want = {"a": torch.Size([2, 3]), "b": torch.Size([4])}
    check_shapes("here", dict(want), want, "x", "y")
    with pytest.raises(InputError, match=r"here: tensor a has shape \[3, 2\] in x but y expects \[2, 3\]"):
        check_shapes("here", {**want, "a": (3, 2)}, want, "x", "y")
    with pytest.raises(InputError, match=r"here: tensor b missing from x \(y expects \[4\]\)"):
        check_shapes("here", {"a": (2, 3)}, want, "x", "y")
    with pytest.raises(InputError, match=r"x has tensors y does not know: \['c'\]"):
        check_shapes("here", {**want, "c": (1,)}, want, "x", "y")
