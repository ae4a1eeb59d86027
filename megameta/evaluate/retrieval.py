"""Cross-lingual alignment: retrieve the same UDHR article across languages by embedding similarity.

For an ordered pair (a, b), each held-out article of a is embedded (mean-pooled hidden states of
``retrieval_layer``) and matched to its most cosine-similar article of b; accuracy is the fraction
matched to the same article number, over the articles both languages have. Chance is 1/n.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
from tqdm.auto import tqdm

from megameta.data.demo.reader import load_udhr_heldout, udhr_scripts
from megameta.evaluate.common import check_model_dir, embed_texts, load_encoder, load_model_tokenizer
from megameta.evaluate.config import EvalConfig


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
    """Means over all / same-script / cross-script ordered pairs of a pairwise accuracy matrix."""
    same, cross = split_pairs_by_script(scripts)

    def pick(pairs: list[tuple[str, str]]) -> list[float]:
        return [matrix[a][b] for a, b in pairs if b in matrix.get(a, {})]

    return {
        "mean": _mean(pick(same + cross)),
        "same_script_mean": _mean(pick(same)),
        "cross_script_mean": _mean(pick(cross)),
        "same_script_pairs": len(pick(same)),
        "cross_script_pairs": len(pick(cross)),
    }


def evaluate_retrieval(
    model_dir: str, corpus_dir: str, cfg: EvalConfig, device, progress: bool = True
) -> dict[str, object]:
    """Pairwise article-retrieval accuracy for `cfg.retrieval_langs`.

    Returns langs, scripts, ``matrix[a][b]`` (accuracy retrieving b's articles from a's),
    ``articles[a][b]`` (how many articles the pair shares), ``chance`` (mean 1/n over pairs), and the
    means of `summarize_matrix`. Pairs sharing fewer than 2 articles are left out.
    """
    check_model_dir(model_dir)
    codes = cfg.retrieval_langs
    texts = {code: load_udhr_heldout(corpus_dir, code) for code in codes}
    scripts = udhr_scripts(corpus_dir, codes)
    tok = load_model_tokenizer(model_dir)
    encoder = load_encoder(model_dir, device)
    emb: dict[str, dict[int, np.ndarray]] = {}
    for code in tqdm(codes, desc="retrieval embed", disable=not progress, leave=False):
        arts = list(texts[code])
        vecs = embed_texts(
            encoder,
            tok,
            [texts[code][a] for a in arts],
            layer=cfg.retrieval_layer,
            max_len=cfg.max_seq_len,
            batch_size=cfg.batch_size,
            device=device,
        ).numpy()
        emb[code] = dict(zip(arts, vecs, strict=True))
    matrix: dict[str, dict[str, float]] = {a: {} for a in codes}
    shared: dict[str, dict[str, int]] = {a: {} for a in codes}
    chance = []
    for a, b in permutations(codes, 2):
        common = sorted(set(emb[a]) & set(emb[b]))
        if len(common) < 2:
            continue
        src = np.stack([emb[a][k] for k in common])
        tgt = np.stack([emb[b][k] for k in common])
        matrix[a][b] = retrieval_accuracy(src, tgt)
        shared[a][b] = len(common)
        chance.append(1.0 / len(common))
    return {
        "langs": list(codes),
        "scripts": scripts,
        "layer": cfg.retrieval_layer,
        "matrix": matrix,
        "articles": shared,
        "chance": _mean(chance),
        **summarize_matrix(matrix, scripts),
    }
