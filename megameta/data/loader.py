"""Shards -> packed, masked MLM batches addressed by global sample index.

:class:`MLMStream` owns one phase's languages. ``batch(indices)`` returns the
masked sequences for any set of global sample indices; the trainer asks for
the slice of the global batch that belongs to its rank, so the stream is the
same for any world size and the data state is one integer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from megameta.data.masking import (
    IGNORE_INDEX,
    mask_tokens,
    replacement_ids,
    special_table,
    word_start_table,
)
from megameta.data.sampler import LanguageSampler
from megameta.data.shards import TokenShard, check_vocab, read_manifest
from megameta.data.tokenizer import vocab_hash
from megameta.errors import InputError


@dataclass
class TokenIds:
    """The special ids the packer and masker need (XLM-R layout by default)."""

    bos: int = 0
    pad: int = 1
    eos: int = 2
    unk: int = 3
    mask: int = -1
    vocab_size: int = 0

    @classmethod
    def from_tokenizer(cls, tok) -> TokenIds:
        return cls(
            tok.bos_token_id,
            tok.pad_token_id,
            tok.eos_token_id,
            tok.unk_token_id,
            tok.mask_token_id,
            len(tok),
        )


class PackedLanguage:
    """One language's shard viewed as fixed-length packed sequences ``<s> chunk </s>``.

    The shard's ``.bin`` already holds ``doc0 </s> doc1 </s> ...``; chunk k is the slice
    ``[k*C, (k+1)*C)`` with ``C = seq_len - 2``. The tail shorter than C is dropped,
    except when the whole stream is shorter than C: then the single chunk is padded.
    """

    def __init__(self, shard: TokenShard, seq_len: int, ids: TokenIds):
        if shard.n_docs == 0:
            raise InputError(f"{shard.path}: shard has no documents")
        if seq_len < 3:
            raise InputError(f"data.max_seq_len must be >= 3, got {seq_len}")
        self.shard, self.seq_len, self.ids = shard, seq_len, ids
        self.tokens = np.asarray(shard.tokens)  # plain ndarray view: slicing a memmap object is slow
        self.chunk = seq_len - 2
        self.n_chunks = max(1, shard.stream_len // self.chunk)

    def fill(self, out: np.ndarray, rows: np.ndarray, chunks: np.ndarray) -> None:
        """Write the packed sequences of ``chunks`` into ``out[rows]`` (``out`` pre-filled with pad)."""
        C, tok = self.chunk, self.tokens
        for r, k in zip(rows.tolist(), chunks.tolist(), strict=True):
            piece = tok[k * C : (k + 1) * C]
            out[r, 0] = self.ids.bos
            out[r, 1 : 1 + len(piece)] = piece
            out[r, 1 + len(piece)] = self.ids.eos

    def sequences(self, chunks: np.ndarray) -> np.ndarray:
        """int64 [len(chunks), seq_len] packed sequences (pad only when the whole stream is shorter)."""
        chunks = np.asarray(chunks, dtype=np.int64)
        out = np.full((len(chunks), self.seq_len), self.ids.pad, dtype=np.int64)
        self.fill(out, np.arange(len(chunks)), chunks)
        return out


class MLMStream:
    """Language-balanced, masked batches for one phase.

    Args:
        shard_dir: root with ``manifest.json`` and ``<lang>/<split>.bin/.idx``.
        langs: languages in this phase (fixed order = language index).
        tokenizer: a :class:`~megameta.data.tokenizer.Vocab` or the HF tokenizer of ``tokenizer_dir``.
        alpha_at: sampling exponent as a function of the global sample index.
    """

    def __init__(
        self,
        shard_dir: str | Path,
        langs: list[str],
        tokenizer_dir: str | Path,
        tokenizer,
        seq_len: int,
        seed: int,
        mask_prob: float,
        alpha_at: Callable[[int], float],
        whole_word_mask: bool = False,
        split: str = "train",
    ):
        manifest = read_manifest(shard_dir)
        check_vocab(manifest, vocab_hash(tokenizer_dir), shard_dir)
        self.langs = list(langs)
        self.ids = TokenIds.from_tokenizer(tokenizer)
        self.seq_len, self.seed, self.mask_prob = seq_len, seed, mask_prob
        self.packed: list[PackedLanguage] = []
        tokens = []
        for lang in self.langs:
            if split not in manifest["languages"].get(lang, {}):
                raise InputError(
                    f"{Path(shard_dir) / lang / split}: language '{lang}' has no '{split}' shard (in config, absent on disk)"
                )
            shard = TokenShard(Path(shard_dir) / lang / split)
            self.packed.append(PackedLanguage(shard, seq_len, self.ids))
            tokens.append(max(shard.n_tokens, 1))
        self.special = special_table(
            self.ids.vocab_size, [self.ids.bos, self.ids.pad, self.ids.eos, self.ids.unk, self.ids.mask]
        )
        self.word_start = word_start_table(tokenizer) if whole_word_mask else None
        self.replace_pool = replacement_ids(self.special, self.ids.vocab_size)
        self.sampler = LanguageSampler([p.n_chunks for p in self.packed], tokens, alpha_at, seed)

    def _assemble(self, lang: np.ndarray, chunk: np.ndarray, sample_ids: np.ndarray) -> dict:
        seqs = np.full((len(lang), self.seq_len), self.ids.pad, dtype=np.int64)
        # One contiguous slice per row: O(batch) Python work, no per-position lookups.
        if len(self.packed) == 1:
            self.packed[0].fill(seqs, np.arange(len(lang)), chunk)
        else:
            order = np.argsort(lang, kind="stable")
            bounds = np.flatnonzero(np.diff(lang[order])) + 1
            for rows in np.split(order, bounds):
                if len(rows):
                    self.packed[int(lang[rows[0]])].fill(seqs, rows, chunk[rows])
        inputs, labels = mask_tokens(
            seqs,
            sample_ids,
            self.seed,
            self.mask_prob,
            self.ids.mask,
            self.special,
            self.ids.vocab_size,
            self.word_start,
            self.replace_pool,
        )
        not_pad = seqs != self.ids.pad
        # Host-side facts about the batch, so that the training step never asks the device for them
        # (each question would be a device->host synchronization): where the masks are, in the
        # row-major order of ``labels.ne(-100).nonzero()``, the language of each masked token,
        # whether anything is padded, and how many real tokens there are.
        masked = np.flatnonzero(labels.reshape(-1) != IGNORE_INDEX)
        n_tokens = int(not_pad.sum())
        lang = lang.astype(np.int64)
        return {
            "input_ids": torch.from_numpy(inputs),
            "attention_mask": torch.from_numpy(not_pad.astype(np.int64)),
            "labels": torch.from_numpy(labels),
            "lang": torch.from_numpy(lang),
            "sample_id": torch.from_numpy(np.asarray(sample_ids, dtype=np.int64)),
            "masked_index": torch.from_numpy(masked),
            "masked_lang": torch.from_numpy(lang[masked // self.seq_len]),
            "padded": n_tokens < not_pad.size,
            "n_tokens": n_tokens,
        }

    def batch(self, indices: np.ndarray) -> dict:
        """Masked batch for global sample ``indices`` (int64 [B]).

        Tensors (CPU): ``input_ids``, ``attention_mask``, ``labels`` [B, T]; ``lang``, ``sample_id`` [B];
        ``masked_index`` [M] (flat positions of the masked tokens, row-major) and ``masked_lang`` [M].
        Host values: ``padded`` (bool: any padding in the batch), ``n_tokens`` (int: non-padding tokens).
        """
        indices = np.asarray(indices, dtype=np.int64)
        lang, chunk, _ = self.sampler.lookup(indices)
        return self._assemble(lang, chunk, indices)

    def fixed_batch(self, lang_id: int, draws: np.ndarray) -> dict:
        """A deterministic batch of one language (validation): draw i is chunk ``i % n_chunks``; keys as
        in :meth:`batch`. A language with fewer chunks than draws cycles through them with a fresh
        mask each time, so a small held-out set is measured on more masked tokens."""
        draws = np.asarray(draws, dtype=np.int64)
        lang = np.full(len(draws), lang_id, dtype=np.int64)
        # Validation sample ids live far from training ids so their masks differ.
        ids = (1 << 40) + lang_id * (1 << 32) + draws
        return self._assemble(lang, draws % self.packed[lang_id].n_chunks, ids)


__all__ = ["IGNORE_INDEX", "MLMStream", "PackedLanguage", "TokenIds"]
