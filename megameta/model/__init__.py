"""XLM-R-compatible masked language model with Hugging Face parameter names.

Names resolve lazily (PEP 562): loading a run config imports ``model.config`` only, not torch.
"""

from megameta.lazy import lazy_getattr

__getattr__, __all__ = lazy_getattr(
    __name__,
    {
        "config": ["PRESETS", "ModelConfig"],
        "encoder": ["MaskedLMOutput", "XLMRForMaskedLM", "flops_per_token", "meta_model"],
        "hf_adapter": ["from_hf_config", "from_hf_model", "to_hf_config", "to_hf_model"],
    },
)
