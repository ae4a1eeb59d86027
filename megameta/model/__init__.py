"""XLM-R-compatible masked language model with Hugging Face parameter names.

Names resolve lazily (PEP 562): loading a run config imports ``model.config`` only, not torch.
"""

from importlib import import_module

_EXPORTS = {
    "PRESETS": "config",
    "ModelConfig": "config",
    "MaskedLMOutput": "encoder",
    "XLMRForMaskedLM": "encoder",
    "flops_per_token": "encoder",
    "meta_model": "encoder",
    "from_hf_config": "hf_adapter",
    "from_hf_model": "hf_adapter",
    "to_hf_config": "hf_adapter",
    "to_hf_model": "hf_adapter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'megameta.model' has no attribute {name!r}")
    return getattr(import_module(f"megameta.model.{_EXPORTS[name]}"), name)
