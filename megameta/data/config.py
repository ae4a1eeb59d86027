"""Config of the data path: where raw text lives, the shared vocabulary, and shards -> MLM batches.

Sections of :class:`megameta.config.RunConfig` (``corpus``, ``tokenizer``, ``data``); loading them
imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from megameta.configtools import check


@dataclass
class CorpusConfig:
    """Where raw text lives."""

    dir: str = "cache/demo_corpus"
    """Root of the raw corpus; relative source paths in ``data`` resolve against it."""
    demo: bool = True
    """Build the embedded demo corpus into ``dir`` when it is missing (``fetch-demo-corpus``)."""


@dataclass
class TokenizerConfig:
    """The shared SentencePiece vocabulary, trained on all languages of ``data.sources``."""

    vocab_size: int = 8000
    """SentencePiece pieces; the HF tokenizer adds 4 (``<s> <pad> </s> <unk>`` offset + ``<mask>``)."""
    model_type: str = "unigram"
    """SentencePiece algorithm: unigram (as XLM-R) or bpe."""
    alpha: float = 0.3
    """Language smoothing for the training sentences: language l is sampled with p_l^alpha."""
    max_sentences: int = 200_000
    """Sentences sampled (over all languages) to train the vocabulary."""
    character_coverage: float = 0.9995
    """Fraction of characters covered by the vocabulary (rare characters fall back to ``<unk>``)."""
    seed: int = 0
    """Seed of the sentence sample."""

    def validate(self, path: str) -> None:
        check(self.vocab_size >= 100, f"{path}.vocab_size", f"must be >= 100, got {self.vocab_size}")
        check(
            self.model_type in ("unigram", "bpe"),
            f"{path}.model_type",
            f"must be unigram or bpe, got {self.model_type!r}",
        )
        check(0 < self.alpha <= 1, f"{path}.alpha", f"must be in (0, 1], got {self.alpha}")
        check(self.max_sentences > 0, f"{path}.max_sentences", f"must be > 0, got {self.max_sentences}")
        check(
            0 < self.character_coverage <= 1,
            f"{path}.character_coverage",
            f"must be in (0, 1], got {self.character_coverage}",
        )


@dataclass
class DataConfig:
    """Raw text -> shards (preprocess) and shards -> MLM batches (train)."""

    sources: dict[str, list[str]] = field(default_factory=dict)
    """Training text per language: ``lang -> [files]``: .txt (layout: ``format``), .jsonl, .parquet,
    ``hf:NAME``; .txt and .jsonl may be compressed (.gz, .xz, .bz2, .zst). Languages listed in ``langs``
    get their entry from ``source_pattern`` unless they have one here."""
    valid_sources: dict[str, list[str]] = field(default_factory=dict)
    """Validation text per language (same formats); never sampled for training."""
    langs: list[str] = field(default_factory=list)
    """Languages whose files come from ``source_pattern`` / ``valid_source_pattern`` (e.g. CC-100's 100)."""
    source_pattern: str = ""
    """Training file per language in ``langs``, with ``{lang}`` for the code, e.g. ``cc100/{lang}.txt.xz``."""
    valid_source_pattern: str = ""
    """Validation file per language in ``langs`` (optional), e.g. ``cc100-valid/{lang}.txt.xz``."""
    format: str = "lines"
    """Plain-text layout: ``lines`` (one document per line) or ``paragraphs`` (CC-100: one paragraph per
    line, documents separated by a blank line). JSON lines, parquet and ``hf:`` sources ignore it."""
    dedup: bool = False
    """Drop exact duplicate documents (same text after case folding and whitespace collapsing) per
    language and split when preprocessing; counted in the manifest as ``duplicate document``."""
    text_field: str = "text"
    """Field holding the document text in .jsonl / .parquet files."""
    workers: int = 2
    """Parallel tokenizer processes for ``preprocess`` (``--workers N`` sets it)."""
    max_seq_len: int = 128
    """Tokens per packed training sequence, ``<s>`` and ``</s>`` included."""
    alpha: float = 0.3
    """Language sampling exponent: q_l = p_l^alpha / sum_k p_k^alpha (XLM-R 0.3, XLM 0.5, mBERT 0.7)."""
    mask_prob: float = 0.15
    """Fraction of non-special tokens selected for MLM (then 80% <mask>, 10% random, 10% unchanged)."""
    whole_word_mask: bool = False
    """Mask whole SentencePiece words (pieces starting with the word marker) instead of single pieces."""
    seed: int = 1234
    """Seed of the sample order and the masking; the stream is a pure function of (seed, sample index)."""

    def __post_init__(self) -> None:
        # Patterns expand into plain per-language sources here, so every reader of the config (the
        # phases' language checks, the trainer, preprocessing) sees one shape; explicit entries win.
        for pattern, target in (
            (self.source_pattern, self.sources),
            (self.valid_source_pattern, self.valid_sources),
        ):
            if pattern:
                for lang in self.langs:
                    target.setdefault(lang, [pattern.replace("{lang}", lang)])

    def validate(self, path: str) -> None:
        check(self.workers >= 1, f"{path}.workers", f"must be >= 1, got {self.workers}")
        check(self.max_seq_len >= 8, f"{path}.max_seq_len", f"must be >= 8, got {self.max_seq_len}")
        check(0 < self.alpha <= 1, f"{path}.alpha", f"must be in (0, 1], got {self.alpha}")
        check(0 < self.mask_prob < 1, f"{path}.mask_prob", f"must be in (0, 1), got {self.mask_prob}")
        check(
            self.format in ("lines", "paragraphs"),
            f"{path}.format",
            f"must be lines or paragraphs, got {self.format!r}",
        )
        for name in ("source_pattern", "valid_source_pattern"):
            pattern = getattr(self, name)
            check(
                not pattern or "{lang}" in pattern,
                f"{path}.{name}",
                f"must contain {{lang}}, got {pattern!r}",
            )
            check(not pattern or bool(self.langs), f"{path}.langs", f"needs the languages of {name}")
        check(
            not self.langs or bool(self.source_pattern or self.valid_source_pattern),
            f"{path}.source_pattern",
            "needed when data.langs is set (e.g. cc100/{lang}.txt.xz)",
        )
        check(len(set(self.langs)) == len(self.langs), f"{path}.langs", f"has duplicates: {self.langs}")
        for lang, files in {**self.sources, **self.valid_sources}.items():
            check(bool(files), f"{path}.sources.{lang}", "needs at least one file")
