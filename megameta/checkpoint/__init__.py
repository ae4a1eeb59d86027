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

from megameta.lazy import lazy_getattr

__getattr__, __all__ = lazy_getattr(
    __name__,
    {
        "store": [
            "HASH_WORKERS",
            "LATEST",
            "check_integrity",
            "checkpoints_dir",
            "file_records",
            "finalize",
            "is_checkpoint",
            "list_tags",
            "newest_intact",
            "owner_rank",
            "prune",
            "resolve",
            "staged_files",
            "staging_dir",
            "step_of",
            "tag_for",
        ],
        "meta": ["META", "CheckpointMeta"],
        "rng": ["rng_state", "set_rng_state"],
        "zero_reader": ["CheckpointReader", "consolidated_state_dict", "optimizer_state"],
        "weights": ["load_weights", "state_dict_digest"],
    },
)
