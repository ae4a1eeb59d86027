"""Everything about a training checkpoint: its files, its meta.json, finding it, reading its weights.

- ``store``: tags, staging + atomic :func:`finalize`, :func:`check_integrity`, fallback to the
  newest intact one (:func:`newest_intact`), :func:`resolve` for a phase/checkpoints/checkpoint
  dir, :func:`prune`. No torch import.
- ``meta``: :class:`CheckpointMeta`, the typed ``meta.json`` (one writer, one reader).
- ``rng``: per-rank RNG state saved beside the DeepSpeed files.
- ``zero_reader``: the fp32 weights of a DeepSpeed ZeRO 0-3 checkpoint, streamed.
- ``weights``: weights only from a checkpoint or an HF dir (the phase hand-off).

Names resolve lazily (PEP 562): ``from megameta.checkpoint import newest_intact`` imports
neither torch nor transformers; the weight readers import torch when first used.
"""

from importlib import import_module

_EXPORTS = {
    "LATEST": "store",
    "check_integrity": "store",
    "checkpoints_dir": "store",
    "finalize": "store",
    "is_checkpoint": "store",
    "list_tags": "store",
    "newest_intact": "store",
    "prune": "store",
    "resolve": "store",
    "staging_dir": "store",
    "step_of": "store",
    "tag_for": "store",
    "META": "meta",
    "CheckpointMeta": "meta",
    "rng_state": "rng",
    "set_rng_state": "rng",
    "CheckpointReader": "zero_reader",
    "consolidated_state_dict": "zero_reader",
    "load_weights": "weights",
    "state_dict_digest": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'megameta.checkpoint' has no attribute {name!r}")
    return getattr(import_module(f"megameta.checkpoint.{_EXPORTS[name]}"), name)
