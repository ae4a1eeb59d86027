"""Helpers shared by the evaluation tasks: input checks, model loading, pooling.

Task files are read by `megameta.evaluate.readers` (and held-out MLM text by
`megameta.data.demo.reader.load_documents`), devices resolved by `megameta.kernels.resolve_device`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from megameta.errors import ConfigError, InputError
from megameta.evaluate.config import DEFAULT_FIELDS, EvalConfig, TaskConfig
from megameta.model.config import positions_usable

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


class EvalRun(NamedTuple):
    """What every task runner (``evaluate_mlm``, ``evaluate_retrieval``, ``evaluate_classification``)
    needs besides its task: the HF model dir, the corpus dir that relative task paths resolve against,
    the evaluation settings, the device and whether to show progress bars."""

    model_dir: str
    corpus_dir: str
    cfg: EvalConfig
    device: torch.device
    progress: bool = True


def check_model_dir(model_dir: str) -> None:
    """Raise `InputError` naming the path unless `model_dir` holds config.json and weights."""
    if not os.path.isdir(model_dir):
        raise InputError(f"model dir not found: {model_dir}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise InputError(f"model dir has no config.json: {os.path.join(model_dir, 'config.json')}")
    if not any(os.path.isfile(os.path.join(model_dir, f)) for f in WEIGHT_FILES):
        raise InputError(f"model dir has no weights ({' / '.join(WEIGHT_FILES)}): {model_dir}")


def resolve(corpus_dir: str, path: str) -> str:
    """A task file's path: absolute as given, relative to the corpus dir otherwise."""
    return path if os.path.isabs(path) else os.path.join(corpus_dir, path)


def check_task_files(cfg: EvalConfig, corpus_dir: str) -> None:
    """Raise `ConfigError` naming the field (``evaluate.tasks[1].test.fr: file not found: ...``) for
    the first file of a running task that does not exist, before any model time is spent.

    A default task's files come from the flat fields, which the message names instead
    (``evaluate.retrieval_langs: file not found: <corpus>/udhr/heldout/xyz.jsonl``).
    """
    for prefix, task in cfg.task_list():
        for field_path, path in task.file_fields():
            full = resolve(corpus_dir, path)
            if os.path.isfile(full):
                continue
            if cfg.tasks:
                raise ConfigError(f"{prefix}.{field_path}: file not found: {full}")
            name, _, lang = field_path.partition(".")
            flat = DEFAULT_FIELDS[task.type][name]
            raise ConfigError(
                f"{prefix}.{flat}{'.' + lang if flat == 'mlm_files' else ''}: file not found: {full}"
            )


def default_task(cfg: EvalConfig, name: str) -> TaskConfig:
    """The demo's default task `name` (``mlm``, ``retrieval``, ``classify``) built from `cfg`."""
    return next(t for t in cfg.default_tasks() if t.name == name)


@contextmanager
def quiet_hf() -> Iterator[None]:
    """Silence transformers' load messages and progress bars (restored afterwards).

    Loading a masked-LM checkpoint into a base or classification class reports unused or newly
    initialised weights; here that is expected, not a problem worth printing.
    """
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_model_tokenizer(model_dir: str):
    """The tokenizer saved in an HF model dir (XLM-R SentencePiece, fairseq id offset).

    Unlike `megameta.data.tokenizer.load_tokenizer` (a tokenizer dir written by
    ``megameta tokenizer``, whose SentencePiece model must be there), any tokenizer files that
    ``AutoTokenizer`` understands will do: a downloaded XLM-R dir may hold only ``tokenizer.json``.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def encode_padded(
    tokenizer, texts: list[str], max_len: int, pairs: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """Tokenize with ``<s> ... </s>`` (``<s> a </s></s> b </s>`` with `pairs`), truncate to `max_len`
    tokens (the longer text of a pair first), pad to the longest in the batch."""
    return tokenizer(texts, pairs, truncation=True, max_length=max_len, padding=True, return_tensors="pt")


def fit_length(model_config, requested: int) -> int:
    """`requested` capped at the positions the model has.

    XLM-R position ids start at ``pad_token_id + 1`` (`positions_usable`: 514 -> 512 for XLM-R
    base); a config without ``max_position_embeddings`` imposes no cap.
    """
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions is None:
        return requested
    return min(requested, positions_usable(positions, getattr(model_config, "pad_token_id", None) or 0))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over non-pad positions (``<s>``/``</s>`` included): [B, L, H], [B, L] -> [B, H]."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


@torch.no_grad()
def embed_texts(
    encoder,
    tokenizer,
    texts: list[str],
    *,
    layer: int,
    max_len: int,
    batch_size: int,
    device: torch.device,
    pairs: list[str] | None = None,
) -> torch.Tensor:
    """Mean-pooled hidden states of `layer` (HF ``hidden_states`` indexing) -> float32 [N, H] on CPU.

    `encoder` is a base model (``AutoModel``) already on `device` and in eval mode. Texts (with
    `pairs`: text pairs, encoded as the tokenizer joins a pair) are truncated to `max_len` tokens,
    capped by the model's position limit (`fit_length`).
    """
    max_len = fit_length(encoder.config, max_len)
    ids = tokenizer(texts, pairs, truncation=True, max_length=max_len)["input_ids"]
    # Batches of similar length waste little compute on padding; rows are put back in input order.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.zeros(len(ids), encoder.config.hidden_size)
    for sl in batches(len(order), batch_size):
        rows = order[sl]
        enc = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt").to(device)
        res = encoder(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True
        )
        try:
            hidden = res.hidden_states[layer]
        except IndexError:
            raise ConfigError(
                f"evaluate.retrieval_layer: {layer} is out of range for a model with "
                f"{len(res.hidden_states)} hidden states (0 = embeddings, -1 = last layer)"
            ) from None
        out[rows] = mean_pool(hidden.float(), enc["attention_mask"]).cpu()
    return out


def load_encoder(model_dir: str, device: torch.device):
    """The base encoder (no LM head) of the model dir, in eval mode on `device`."""
    from transformers import AutoModel

    with quiet_hf():
        model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False)
    return model.to(device).eval()
