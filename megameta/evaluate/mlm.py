"""Held-out masked-LM loss and perplexity per language.

Evaluation masking differs from training masking on purpose: every selected token is replaced by
``<mask>`` (no 80/10/10 split). Random or kept replacements make the number noisier and, for kept
tokens, let the model read the answer; all-``<mask>`` measures prediction from context alone and is
the same for every model, which is what a comparison needs. The mask is a pure function of the seed
and the token stream, so two models evaluated with the same config see identical masked positions.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from megameta.data.demo.reader import load_documents
from megameta.data.masking import IGNORE_INDEX
from megameta.errors import InputError
from megameta.evaluate.common import (
    EvalRun,
    batches,
    check_model_dir,
    default_task,
    fit_length,
    load_model_tokenizer,
    quiet_hf,
    resolve,
)
from megameta.evaluate.config import TaskConfig


def pack_sequences(doc_ids: list[list[int]], max_len: int, bos: int, eos: int) -> list[list[int]]:
    """Concatenate documents (each ended by `eos`) and cut into ``<s> chunk </s>`` of <= `max_len`.

    Packing keeps every token (nothing truncated away) and matches how training packs sequences.
    """
    stream = [t for ids in doc_ids for t in (*ids, eos)]
    body = max_len - 2
    return [[bos, *stream[i : i + body], eos] for i in range(0, len(stream), body)]


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest: (input_ids [B, L] long, attention_mask [B, L] long)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, (ids != pad_id).long()


def eval_mask(
    input_ids: torch.Tensor, maskable: torch.Tensor, mask_prob: float, mask_id: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic evaluation mask.

    Each row masks ``max(1, round(mask_prob * n_maskable))`` of its maskable positions, chosen by a
    generator seeded with `seed` (a fixed count per row gives a lower-variance estimate than an
    independent coin per token). Returns (masked input_ids, labels with -100 where not masked).
    Rows without maskable tokens stay unmasked.
    """
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(input_ids.shape, generator=gen)
    scores[~maskable] = 2.0  # never selected: real scores are < 1
    counts = (maskable.sum(1).float() * mask_prob).round().clamp(min=1).long()
    counts = torch.minimum(counts, maskable.sum(1))
    ranks = scores.argsort(dim=1).argsort(dim=1)
    selected = (ranks < counts.unsqueeze(1)) & maskable
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = torch.where(selected, torch.full_like(input_ids, mask_id), input_ids)
    return masked, labels


@torch.no_grad()
def masked_lm_loss_sum(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """(sum of cross-entropy over labeled positions, number of them) for one batch.

    The LM head runs on masked positions only when the model exposes ``lm_head`` (XLM-R does): full
    logits would be [B, L, V] floats, 2 GB for XLM-R's 250k vocabulary at batch 16 x 128.
    """
    where = labels != IGNORE_INDEX
    n = int(where.sum())
    if n == 0:
        return 0.0, 0
    base = getattr(model, model.base_model_prefix, None)
    head = getattr(model, "lm_head", None)
    if base is not None and head is not None:
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = head(hidden[where])
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[where]
    loss = torch.nn.functional.cross_entropy(logits.float(), labels[where], reduction="sum")
    return float(loss), n


def evaluate_mlm(run: EvalRun, task: TaskConfig | None = None) -> dict[str, dict[str, float | int]]:
    """{lang: {loss (nats per masked token), perplexity = exp(loss), tokens (masked), sequences, docs,
    max_seq_len}} for an mlm task's files (default: the demo's ``mlm_files``); sequences are capped
    at the model's position limit when `cfg.max_seq_len` exceeds it."""
    model_dir, corpus_dir, cfg, device, progress = run
    from transformers import AutoModelForMaskedLM

    check_model_dir(model_dir)
    tok = load_model_tokenizer(model_dir)
    with quiet_hf():
        model = AutoModelForMaskedLM.from_pretrained(model_dir)
    model.to(device).eval()
    special = set(tok.all_special_ids)
    max_len = fit_length(model.config, cfg.max_seq_len)
    results: dict[str, dict[str, float | int]] = {}
    task = task or default_task(cfg, "mlm")
    for lang, value in task.files.items():
        files = [value] if isinstance(value, str) else value
        docs: list[str] = []
        for rel in files:
            docs.extend(load_documents(resolve(corpus_dir, rel), cfg.mlm_max_docs - len(docs)))
            if len(docs) >= cfg.mlm_max_docs:
                break
        if not docs:
            field = f"mlm_files.{lang}" if task.name == "mlm" else f"task {task.name!r}: files.{lang}"
            raise InputError(f"{field}: no documents in {files}")
        doc_ids = tok(docs, add_special_tokens=False)["input_ids"]
        seqs = pack_sequences(doc_ids, max_len, tok.bos_token_id, tok.eos_token_id)
        ids, attn = pad_batch(seqs, tok.pad_token_id)
        maskable = (attn == 1) & ~torch.isin(ids, torch.tensor(sorted(special)))
        masked, labels = eval_mask(ids, maskable, cfg.mask_prob, tok.mask_token_id, cfg.seed)
        total, count = 0.0, 0
        for sl in tqdm(
            list(batches(len(seqs), cfg.batch_size)), desc=f"mlm {lang}", disable=not progress, leave=False
        ):
            loss, n = masked_lm_loss_sum(
                model, masked[sl].to(device), attn[sl].to(device), labels[sl].to(device)
            )
            total += loss
            count += n
        mean = total / max(count, 1)
        results[lang] = {
            "loss": mean,
            "perplexity": math.exp(mean),
            "tokens": count,
            "sequences": len(seqs),
            "docs": len(docs),
            "max_seq_len": max_len,
        }
    return results
