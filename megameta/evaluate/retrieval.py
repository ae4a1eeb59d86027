"""Cross-lingual alignment: retrieve the same item (UDHR paragraph, Tatoeba sentence) across languages.

For an ordered pair (a, b), each item of a is embedded (mean-pooled hidden states of
``retrieval_layer``) and matched to its most cosine-similar item of b; accuracy is the fraction
matched to the same item (paragraph of an article, line), over the items both languages have.
Chance is 1/n.
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import permutations

import numpy as np
from tqdm.auto import tqdm

from megameta.errors import InputError
from megameta.evaluate.common import (
    EvalRun,
    check_model_dir,
    default_task,
    embed_texts,
    load_encoder,
    load_model_tokenizer,
    resolve,
)
from megameta.evaluate.config import TaskConfig
from megameta.evaluate.readers import is_line_aligned, read_aligned, read_scripts

#: Script of a language no ``scripts`` entry names (as ``udhr/languages.json`` has it).
UNKNOWN_SCRIPT = "unknown"


def cosine_similarity(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """[n, d], [m, d] -> [n, m] cosine similarities (zero vectors give 0)."""
    src_n = src / np.maximum(np.linalg.norm(src, axis=1, keepdims=True), 1e-12)
    tgt_n = tgt / np.maximum(np.linalg.norm(tgt, axis=1, keepdims=True), 1e-12)
    return src_n @ tgt_n.T


def retrieval_accuracy(src_emb: np.ndarray, tgt_emb: np.ndarray) -> float:
    """Fraction of rows i of `src_emb` whose most similar row of `tgt_emb` is row i.

    Row i of both arrays must describe the same item. Ties go to the lowest index.
    """
    if src_emb.shape[0] != tgt_emb.shape[0] or src_emb.shape[0] == 0:
        raise ValueError(f"need the same, non-zero number of rows, got {src_emb.shape} and {tgt_emb.shape}")
    nearest = cosine_similarity(src_emb, tgt_emb).argmax(axis=1)
    return float((nearest == np.arange(src_emb.shape[0])).mean())


def split_pairs_by_script(scripts: dict[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """All ordered pairs of distinct codes, split into (same-script pairs, cross-script pairs)."""
    same, cross = [], []
    for a, b in permutations(scripts, 2):
        (same if scripts[a] == scripts[b] else cross).append((a, b))
    return same, cross


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize_matrix(matrix: dict[str, dict[str, float]], scripts: dict[str, str]) -> dict[str, object]:
    """Means over all / same-script / cross-script ordered pairs of a pairwise accuracy matrix.

    A language whose script is ``"unknown"`` counts in the overall mean only: whether its pairs are
    same-script is not known.
    """
    known = {k: v for k, v in scripts.items() if v != UNKNOWN_SCRIPT}
    same, cross = split_pairs_by_script(known)
    other = [(a, b) for a, b in permutations(scripts, 2) if a not in known or b not in known]

    def pick(pairs: list[tuple[str, str]]) -> list[float]:
        return [matrix[a][b] for a, b in pairs if b in matrix.get(a, {})]

    return {
        "mean": _mean(pick(same + cross + other)),
        "same_script_mean": _mean(pick(same)),
        "cross_script_mean": _mean(pick(cross)),
        "same_script_pairs": len(pick(same)),
        "cross_script_pairs": len(pick(cross)),
    }


def task_scripts(task: TaskConfig, langs: list[str], corpus_dir: str) -> dict[str, str]:
    """Language -> script: the task's ``scripts``, then its ``scripts_file``, else ``"unknown"``."""
    table = read_scripts(resolve(corpus_dir, task.scripts_file)) if task.scripts_file else {}
    return {lang: task.scripts.get(lang) or table.get(lang) or UNKNOWN_SCRIPT for lang in langs}


def evaluate_retrieval(run: EvalRun, task: TaskConfig | None = None) -> dict[str, object]:
    """Pairwise top-1 retrieval accuracy of a retrieval task (default: the demo's held-out UDHR
    paragraphs).

    A task's ``files`` are all aligned with each other: every ordered pair of its languages is
    scored. Each of its ``pairs`` is aligned only within itself (Tatoeba: each language has its own
    English file): each is scored both directions. Returns langs, scripts, layer, ``matrix[a][b]``
    (accuracy retrieving b's items from a's), ``pairs`` (the task's pairs, as
    ``[a, b]``), ``items[a][b]`` (how many items the pair shares),
    ``chance`` (mean 1/n over pairs), and the means of `summarize_matrix`. Pairs sharing fewer than
    2 items are left out; line-aligned files of different lengths are an `InputError`.
    """
    model_dir, corpus_dir, cfg, device, progress = run
    check_model_dir(model_dir)
    task = task or default_task(cfg, "retrieval")
    groups = [task.files] if task.files else task.pairs
    langs = list(dict.fromkeys(lang for group in groups for lang in group))
    scripts = task_scripts(task, langs, corpus_dir)
    tok = load_model_tokenizer(model_dir)
    encoder = load_encoder(model_dir, device)
    paths = list(dict.fromkeys(str(path) for group in groups for path in group.values()))
    emb: dict[str, dict[Hashable, np.ndarray]] = {}
    for path in tqdm(paths, desc=f"{task.name} embed", disable=not progress, leave=False):
        texts = read_aligned(resolve(corpus_dir, path))
        vecs = embed_texts(
            encoder,
            tok,
            list(texts.values()),
            layer=cfg.retrieval_layer,
            max_len=cfg.max_seq_len,
            batch_size=cfg.batch_size,
            device=device,
        ).numpy()
        emb[path] = dict(zip(texts, vecs, strict=True))
    matrix: dict[str, dict[str, float]] = {a: {} for a in langs}
    shared: dict[str, dict[str, int]] = {a: {} for a in langs}
    chance = []
    for group in groups:
        for a, b in permutations(group, 2):
            ea, eb = emb[str(group[a])], emb[str(group[b])]
            if is_line_aligned(group[a]) and is_line_aligned(group[b]) and len(ea) != len(eb):
                raise InputError(
                    f"{resolve(corpus_dir, group[a])} has {len(ea)} lines, {resolve(corpus_dir, group[b])} "
                    f"{len(eb)}: line-aligned files must have the same number of lines"
                )
            common = sorted(set(ea) & set(eb))
            if len(common) < 2:
                continue
            src = np.stack([ea[k] for k in common])
            tgt = np.stack([eb[k] for k in common])
            matrix[a][b] = retrieval_accuracy(src, tgt)
            shared[a][b] = len(common)
            chance.append(1.0 / len(common))
    return {
        "langs": langs,
        "scripts": scripts,
        "layer": cfg.retrieval_layer,
        "mode": "files" if task.files else "pairs",
        "pairs": [list(group) for group in task.pairs],
        "matrix": matrix,
        "items": shared,
        "chance": _mean(chance),
        **summarize_matrix(matrix, scripts),
    }
