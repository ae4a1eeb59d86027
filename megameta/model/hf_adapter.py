"""Mapping between ``ModelConfig``/``XLMRForMaskedLM`` and Hugging Face's XLM-R classes.

Parameter names are identical on both sides, so weights move with a strict
``load_state_dict``; only the configs need translating, and the tied output embedding
(``TIED``) is stored once. Everything that knows Hugging Face's names and files lives here:
the one config mapping (:func:`hf_config_dict`), shape checks, reading an HF dir's tensors.
transformers is imported lazily because importing it costs seconds that training start-up
does not need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from megameta.errors import ConfigError, InputError
from megameta.model.config import ModelConfig
from megameta.model.encoder import XLMRForMaskedLM, meta_model

if TYPE_CHECKING:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM


#: tied alias -> the parameter stored (Hugging Face saves only the right-hand names).
TIED = {
    "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}
_HF_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


#: ModelConfig field -> Hugging Face config key: the one mapping, read in both directions.
HF_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "layer_norm_eps": "layer_norm_eps",
    "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "initializer_range": "initializer_range",
}
#: What every config we write fixes, and what we require of one we read (``type_vocab_size``...).
HF_FIXED = {"hidden_act": "gelu", "type_vocab_size": 1, "tie_word_embeddings": True, "is_decoder": False}


def hf_config_dict(cfg: ModelConfig, dtype: str = "fp32") -> dict:
    """The ``config.json`` of an ``XLMRobertaForMaskedLM`` with ``cfg``'s architecture, weights stored in
    ``dtype`` (fp32, bf16, fp16). Needs no transformers import."""
    from importlib.metadata import version

    cfg = cfg.resolved()
    cfg.validate()
    if cfg.vocab_size <= 0:
        raise ConfigError("model.vocab_size: must be set (> 0) to build a Hugging Face config, got 0")
    return {
        "architectures": ["XLMRobertaForMaskedLM"],
        "model_type": "xlm-roberta",
        **{hf: getattr(cfg, ours) for ours, hf in HF_NAMES.items()},
        **HF_FIXED,
        "add_cross_attention": False,
        "classifier_dropout": None,
        "use_cache": True,
        "dtype": _HF_DTYPE[dtype],
        "transformers_version": version("transformers"),
    }


#: ``hf_config_dict`` keys that describe the file, not the architecture.
FILE_KEYS = ("architectures", "model_type", "dtype", "transformers_version")


def to_hf_config(cfg: ModelConfig) -> XLMRobertaConfig:
    """Hugging Face config describing the same architecture (vocab_size must be set)."""
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(**{k: v for k, v in hf_config_dict(cfg).items() if k not in FILE_KEYS})


def from_hf_config(hf_cfg: XLMRobertaConfig) -> ModelConfig:
    """``ModelConfig`` (preset "custom") for a Hugging Face XLM-R config this model can represent."""
    for key, want in HF_FIXED.items():
        if key != "tie_word_embeddings" and getattr(hf_cfg, key, want) != want:
            raise ConfigError(f"hf_config.{key}: this encoder needs {want!r}, got {getattr(hf_cfg, key)!r}")
    cfg = ModelConfig(preset="custom", **{ours: getattr(hf_cfg, hf) for ours, hf in HF_NAMES.items()})
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


def read_hf_state(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF model dir in their stored dtype (sharded or not; tied aliases not added)."""
    files = hf_weight_files(hf_dir)
    if files is None:
        return dict(torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True))
    from safetensors.torch import load_file

    state = {}
    for f in files:
        if not f.exists():
            raise InputError(f"{f} missing (named in {hf_dir / 'model.safetensors.index.json'})")
        state.update(load_file(str(f)))
    return state


def canonical_state(state: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Our model's tensors only: drop the pooler, ``position_ids`` buffers and tied aliases (refusing
    untied output embeddings, which our model cannot represent)."""
    out = {}
    for name, t in state.items():
        if name.startswith("roberta.pooler.") or name.endswith("position_ids"):
            continue  # not part of the MLM model
        out[name] = t
    for alias, target in TIED.items():
        if alias in out:
            t = out.pop(alias)
            if target in out and not torch.equal(out[target], t):
                raise InputError(f"{where}: {alias} is not tied to {target}; our model ties them")
            out.setdefault(target, t)
    return out


def add_tied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each tied alias pointing at its stored tensor (what ``load_state_dict`` expects)."""
    for alias, target in TIED.items():
        if target in state:
            state[alias] = state[target]
    return state


def expected_shapes(cfg: ModelConfig) -> dict[str, torch.Size]:
    """Name -> shape of every tensor HF stores for ``cfg`` (tied aliases excluded); no memory used."""
    return {k: v.shape for k, v in meta_model(cfg).state_dict().items() if k not in TIED}


def check_shapes(where: object, got: dict, want: dict, got_what: str, want_what: str) -> None:
    """InputError naming the first tensor that is missing, misshapen or unknown in ``got`` vs ``want``
    (name -> shape); ``got_what``/``want_what`` say whose tensors they are."""
    for name, shape in want.items():
        if name not in got:
            raise InputError(
                f"{where}: tensor {name} missing from {got_what} ({want_what} expects {list(shape)})"
            )
        if tuple(got[name]) != tuple(shape):
            raise InputError(
                f"{where}: tensor {name} has shape {list(got[name])} in {got_what} but {want_what} expects {list(shape)}"
            )
    extra = sorted(set(got) - set(want))
    if extra:
        raise InputError(f"{where}: {got_what} has tensors {want_what} does not know: {extra[:3]}")
