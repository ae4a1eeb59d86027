"""XLM-R-compatible masked language model with Hugging Face parameter names."""

from megameta.model.config import PRESETS, ModelConfig
from megameta.model.encoder import MaskedLMOutput, XLMRForMaskedLM, flops_per_token
from megameta.model.hf_adapter import from_hf_config, from_hf_model, to_hf_config, to_hf_model

__all__ = [
    "PRESETS",
    "MaskedLMOutput",
    "ModelConfig",
    "XLMRForMaskedLM",
    "flops_per_token",
    "from_hf_config",
    "from_hf_model",
    "to_hf_config",
    "to_hf_model",
]
