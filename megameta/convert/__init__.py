"""Conversion between training checkpoints and Hugging Face model dirs, one direction per module.

- ``to_hf``: checkpoint (any ZeRO stage, any world size) -> HF dir, streamed and verified (:func:`convert`).
- ``from_hf``: HF dir -> weights-only checkpoint for ``init_from`` (:func:`from_hf`).
- ``safetensors``: the streaming safetensors writer and ``--shard-size`` parsing.
- ``verify``: transformers must load the output and give our model's logits.

Reading checkpoints is :mod:`megameta.checkpoint`'s job; Hugging Face names and configs are
:mod:`megameta.model.hf_adapter`'s. The names below are re-exported for the CLI, the pipeline
and the tests.
"""

from megameta.checkpoint import consolidated_state_dict, load_weights, state_dict_digest
from megameta.convert.from_hf import from_hf, hf_model_config
from megameta.convert.outdir import PROVENANCE
from megameta.convert.safetensors import SafetensorsWriter, parse_size
from megameta.convert.to_hf import convert, model_config_of
from megameta.convert.verify import VERIFY_TOL, verify_hf_dir
from megameta.model.hf_adapter import is_hf_dir

__all__ = [
    "PROVENANCE",
    "VERIFY_TOL",
    "SafetensorsWriter",
    "consolidated_state_dict",
    "convert",
    "from_hf",
    "hf_model_config",
    "is_hf_dir",
    "load_weights",
    "model_config_of",
    "parse_size",
    "state_dict_digest",
    "verify_hf_dir",
]
