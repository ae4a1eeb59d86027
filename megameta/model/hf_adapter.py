"""Mapping between ``ModelConfig``/``XLMRForMaskedLM`` and Hugging Face's XLM-R classes.

Parameter names are identical on both sides, so weights move with a strict
``load_state_dict``; only the configs need translating. transformers is imported lazily
because importing it costs seconds that training start-up does not need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from megameta.errors import ConfigError
from megameta.model.config import ModelConfig
from megameta.model.encoder import XLMRForMaskedLM

if TYPE_CHECKING:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM


def to_hf_config(cfg: ModelConfig) -> XLMRobertaConfig:
    """Hugging Face config describing the same architecture (vocab_size must be set)."""
    from transformers import XLMRobertaConfig

    cfg = cfg.resolved()
    cfg.validate()
    if cfg.vocab_size <= 0:
        raise ConfigError("model.vocab_size: must be set (> 0) to build a Hugging Face config, got 0")
    return XLMRobertaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=1,
        initializer_range=cfg.initializer_range,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        tie_word_embeddings=True,
    )


def from_hf_config(hf_cfg: XLMRobertaConfig) -> ModelConfig:
    """``ModelConfig`` (preset "custom") for a Hugging Face XLM-R config this model can represent."""
    if getattr(hf_cfg, "hidden_act", "gelu") != "gelu":
        raise ConfigError(f"hf_config.hidden_act: only exact 'gelu' is supported, got {hf_cfg.hidden_act!r}")
    if getattr(hf_cfg, "type_vocab_size", 1) != 1:
        raise ConfigError(f"hf_config.type_vocab_size: must be 1, got {hf_cfg.type_vocab_size}")
    if getattr(hf_cfg, "is_decoder", False):
        raise ConfigError("hf_config.is_decoder: must be False (bidirectional encoder)")
    cfg = ModelConfig(
        preset="custom",
        vocab_size=hf_cfg.vocab_size,
        hidden_size=hf_cfg.hidden_size,
        num_layers=hf_cfg.num_hidden_layers,
        num_heads=hf_cfg.num_attention_heads,
        intermediate_size=hf_cfg.intermediate_size,
        max_position_embeddings=hf_cfg.max_position_embeddings,
        pad_token_id=hf_cfg.pad_token_id,
        bos_token_id=hf_cfg.bos_token_id,
        eos_token_id=hf_cfg.eos_token_id,
        layer_norm_eps=hf_cfg.layer_norm_eps,
        hidden_dropout=hf_cfg.hidden_dropout_prob,
        attention_dropout=hf_cfg.attention_probs_dropout_prob,
        initializer_range=hf_cfg.initializer_range,
    )
    cfg.validate("hf_config")
    return cfg


def to_hf_model(model: XLMRForMaskedLM) -> XLMRobertaForMaskedLM:
    """A Hugging Face model holding a copy of ``model``'s weights (strict load)."""
    from transformers import XLMRobertaForMaskedLM

    hf = XLMRobertaForMaskedLM(to_hf_config(model.cfg))
    hf.load_state_dict(model.state_dict(), strict=True)
    return hf


def from_hf_model(hf_model: XLMRobertaForMaskedLM, **overrides: object) -> XLMRForMaskedLM:
    """Our model with a copy of ``hf_model``'s weights; ``overrides`` set execution fields
    such as ``compile`` or ``activation_checkpointing``."""
    import dataclasses

    cfg = dataclasses.replace(from_hf_config(hf_model.config), **overrides)
    model = XLMRForMaskedLM(cfg)
    model.load_state_dict(hf_model.state_dict(), strict=True)
    return model


def hf_weight_files(hf_dir: Path) -> list[Path] | None:
    """The safetensors files of an HF model dir (sharded or not); None when it has none."""
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [hf_dir / f for f in files]
    if (hf_dir / "model.safetensors").exists():
        return [hf_dir / "model.safetensors"]
    return None


def is_hf_dir(path: Path) -> bool:
    """A Hugging Face model dir: config.json plus weights (safetensors or pytorch_model.bin)."""
    return (path / "config.json").exists() and (
        hf_weight_files(path) is not None or (path / "pytorch_model.bin").exists()
    )
