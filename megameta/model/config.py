"""Model configuration: one dataclass, filled by a generic YAML loader.

Sizes come from a named preset unless given explicitly; ``resolved()`` fills them in and
``validate()`` rejects bad values with messages that start with the dotted field path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from megameta.errors import ConfigError

#: preset name -> (num_layers, hidden_size, num_heads, intermediate_size)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "demo": (2, 128, 4, 512),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
_SIZE_FIELDS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")


def positions_usable(max_position_embeddings: int, pad_token_id: int) -> int:
    """Longest sequence (tokens, ``<s>``/``</s>`` included) a RoBERTa-style position table allows.

    RoBERTa numbers real tokens from ``pad_token_id + 1`` (rows up to ``pad_token_id`` are never
    used by a real token), so ``max_position_embeddings`` rows hold
    ``max_position_embeddings - pad_token_id - 1`` positions: 514 -> 512 for XLM-R. Zero or less
    means the table is too small for any token.
    """
    return max_position_embeddings - pad_token_id - 1


@dataclass
class ModelConfig:
    """Architecture and execution options of the XLM-R-style masked language model."""

    preset: str = "demo"
    """Size preset: ``demo``, ``base`` (XLM-R base), ``large`` (XLM-R large) or ``custom``
    (all four size fields must then be given)."""

    vocab_size: int = 0
    """Vocabulary size; 0 means "take it from the tokenizer at run time" (the trainer sets it)."""

    hidden_size: int | None = None
    """Width of the residual stream; None takes the preset's value."""

    num_layers: int | None = None
    """Number of transformer layers; None takes the preset's value."""

    num_heads: int | None = None
    """Attention heads per layer (must divide hidden_size); None takes the preset's value."""

    intermediate_size: int | None = None
    """Width of the feed-forward layer; None takes the preset's value."""

    max_position_embeddings: int = 514
    """Rows of the learned position table; RoBERTa offsets positions by pad_token_id + 1, so the
    longest sequence is max_position_embeddings - pad_token_id - 1 tokens (512 by default)."""

    pad_token_id: int = 1
    """Id of the padding token (its embedding row is zero and receives no gradient)."""

    bos_token_id: int = 0
    """Id of the beginning-of-sequence token ``<s>``."""

    eos_token_id: int = 2
    """Id of the end-of-sequence token ``</s>``."""

    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm."""

    hidden_dropout: float = 0.1
    """Dropout probability on embeddings and residual branches, in [0, 1)."""

    attention_dropout: float = 0.1
    """Dropout probability on attention weights (training only), in [0, 1)."""

    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of weights."""

    activation_checkpointing: bool = False
    """Recompute each layer's activations in backward instead of storing them."""

    checkpoint_every: int = 1
    """With activation_checkpointing: recompute only layers 0, k, 2k, ... (selective checkpointing:
    about 1/k of the recomputation for 1/k of the memory saving); 1 = every layer."""

    compile: bool = False
    """Compile each transformer layer with ``torch.compile`` (regional compilation)."""

    loss_chunk_size: int = 4096
    """Masked positions per chunk of the output layer; bounds the live logits to chunk x vocab."""

    def resolved(self) -> ModelConfig:
        """Return a copy with the preset's sizes filled in where a size field is None."""
        sizes = dict(zip(_SIZE_FIELDS, PRESETS.get(self.preset, (None,) * 4)))
        filled = {k: getattr(self, k) if getattr(self, k) is not None else sizes[k] for k in _SIZE_FIELDS}
        return dataclasses.replace(self, **filled)

    def validate(self, path: str = "model") -> None:
        """Raise ConfigError naming ``{path}.<field>`` for the first bad value found."""
        if self.preset not in (*PRESETS, "custom"):
            valid = ", ".join([*PRESETS, "custom"])
            raise ConfigError(f"{path}.preset: must be one of {valid}, got {self.preset!r}")
        cfg = self.resolved()
        for name in _SIZE_FIELDS:
            value = getattr(cfg, name)
            if value is None:
                raise ConfigError(f"{path}.{name}: required when preset is 'custom'")
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{path}.{name}: must be a positive integer, got {value!r}")
        if cfg.hidden_size % cfg.num_heads:
            raise ConfigError(
                f"{path}.num_heads: must divide hidden_size ({cfg.hidden_size}), got {cfg.num_heads}"
            )
        if self.vocab_size < 0:
            raise ConfigError(
                f"{path}.vocab_size: must be >= 0 (0 = from the tokenizer), got {self.vocab_size}"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value < 0 or (self.vocab_size and value >= self.vocab_size):
                raise ConfigError(f"{path}.{name}: must be in [0, vocab_size), got {value}")
        if positions_usable(self.max_position_embeddings, self.pad_token_id) <= 0:
            raise ConfigError(
                f"{path}.max_position_embeddings: must exceed pad_token_id + 1 ({self.pad_token_id + 1}), "
                f"got {self.max_position_embeddings}"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{path}.{name}: must be in [0, 1), got {value}")
        for name in ("layer_norm_eps", "initializer_range"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}: must be > 0, got {getattr(self, name)}")
        if self.checkpoint_every <= 0:
            raise ConfigError(
                f"{path}.checkpoint_every: must be a positive integer, got {self.checkpoint_every}"
            )
        if self.loss_chunk_size <= 0:
            raise ConfigError(
                f"{path}.loss_chunk_size: must be a positive integer, got {self.loss_chunk_size}"
            )

    @property
    def max_seq_len(self) -> int:
        """Longest input sequence the position table allows (see `positions_usable`)."""
        return positions_usable(self.max_position_embeddings, self.pad_token_id)
