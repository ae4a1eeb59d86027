"""Zero-shot cross-lingual classification: train on one language's labeled text, test on every language.

A classification task (`TaskConfig`) names a training file in ``train_lang`` and a test file per
language; the train language is the in-language score, the others measure transfer. The default is
the demo's topic task on the Wikipedia summaries (``wiki/<lang>/{train,test}.jsonl``, 8 labels).
Sentence-pair tasks (XNLI, PAWS-X) are encoded as the tokenizer joins a pair (``<s> a </s></s> b </s>``).

Two modes (``classify_mode``):

- ``probe`` (default): the encoder is frozen; each document becomes the mean-pooled hidden state
  of ``retrieval_layer``; a multinomial logistic regression (L2, full-batch L-BFGS, zero init) is fit
  on standardized features. It runs in seconds on 2 CPU cores for a tiny model and, being convex,
  its score reflects the representation rather than optimisation luck; transfer then tests directly
  whether languages share one feature space, which is the paper's claim. Seeds vary only the
  training subsample, so when all labeled examples fit in ``classify_max_train`` every seed gives
  the same number (std 0).
- ``finetune``: ``AutoModelForSequenceClassification`` trained end to end (AdamW, linear decay),
  the paper's protocol. Seeds vary the head init, the data order and the subsample. A tiny model
  takes minutes per seed on CPU; use a GPU for real models.

The training set is drawn class-balanced (round robin over labels in seeded order, up to
``classify_max_train``) so rare topics are learned; the test set keeps its natural proportions (a
seeded subsample of up to ``classify_max_test``, the same for every seed and model). The baseline
reported next to each accuracy predicts the most frequent label of the whole labeled training file.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from tqdm.auto import tqdm

from megameta.errors import InputError
from megameta.evaluate.common import (
    EvalRun,
    batches,
    check_model_dir,
    default_task,
    embed_texts,
    encode_padded,
    fit_length,
    load_encoder,
    load_model_tokenizer,
    quiet_hf,
    resolve,
)
from megameta.evaluate.config import EvalConfig, TaskConfig
from megameta.evaluate.readers import LabeledRow, read_labeled, select_language

#: (texts, second sentences or None, label indices) of one split of one language.
Examples = tuple[list[str], list[str] | None, list[int]]


def accuracy(pred: list[int] | np.ndarray, gold: list[int] | np.ndarray) -> float:
    """Fraction of positions where `pred` equals `gold` (same length, non-empty)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape or pred.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {pred.shape} and {gold.shape}")
    return float((pred == gold).mean())


def majority_baseline(train_labels: list[int], test_labels: list[int]) -> float:
    """Accuracy on `test_labels` of always predicting the most frequent train label (ties: lowest)."""
    counts = Counter(train_labels)
    top = max(sorted(counts), key=lambda k: counts[k])
    return accuracy([top] * len(test_labels), test_labels)


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std with ddof=1); std is 0.0 for a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def balanced_sample(labels: list[int], max_n: int, seed: int) -> list[int]:
    """Indices of up to `max_n` examples, taken round robin over labels, each label in seeded order."""
    rng = np.random.default_rng(seed)
    pools = {
        c: list(rng.permutation([i for i, y in enumerate(labels) if y == c])) for c in sorted(set(labels))
    }
    picked: list[int] = []
    while len(picked) < max_n and any(pools.values()):
        for c in pools:
            if pools[c] and len(picked) < max_n:
                picked.append(int(pools[c].pop(0)))
    return sorted(picked)


def _examples(rows: list[LabeledRow], labels: list[str], path: str) -> Examples:
    """Rows as (texts, pairs or None, label indices); a label outside `labels` names file:line."""
    index = {label: i for i, label in enumerate(labels)}
    for r in rows:
        if r.label not in index:
            raise InputError(f"{path}:{r.line}: label {r.label!r} is not one of {labels}")
    pairs = [r.pair or "" for r in rows] if any(r.pair is not None for r in rows) else None
    return [r.text for r in rows], pairs, [index[r.label] for r in rows]


def _take(data: Examples, idx: list[int]) -> Examples:
    texts, pairs, ys = data
    return [texts[i] for i in idx], None if pairs is None else [pairs[i] for i in idx], [ys[i] for i in idx]


def load_task_data(task: TaskConfig, corpus_dir: str) -> tuple[list[str], Examples, dict[str, Examples]]:
    """(labels, training examples, test examples per language) of a classification task.

    Labels are the task's, else the sorted labels of the training rows. A file shared by several
    languages (XNLI's ``xnli.test.tsv``) is read once.
    """
    cache: dict[str, list[LabeledRow]] = {}

    def rows(path: str, lang: str) -> list[LabeledRow]:
        full = resolve(corpus_dir, path)
        if full not in cache:
            cache[full] = read_labeled(full)
        return select_language(cache[full], lang, full)

    train_rows = rows(task.train, task.train_lang)
    labels = list(task.labels) or sorted({r.label for r in train_rows})
    if len(labels) < 2:
        raise InputError(f"{resolve(corpus_dir, task.train)}: needs at least 2 labels, got {labels}")
    train = _examples(train_rows, labels, resolve(corpus_dir, task.train))
    tests = {}
    for lang, path in task.test.items():
        tests[lang] = _examples(rows(path, lang), labels, resolve(corpus_dir, path))
        if (tests[lang][1] is None) != (train[1] is None):
            pair = ("sentence pairs", "single texts")
            raise InputError(
                f"{resolve(corpus_dir, path)}: holds {pair[tests[lang][1] is None]}, the training file "
                f"{resolve(corpus_dir, task.train)} {pair[train[1] is None]}"
            )
    return labels, train, tests


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_labels: int, l2: float, max_iter: int = 200):
    """Multinomial logistic regression on standardized `x`; returns predict(features) -> labels."""
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mu) / sd
    w = torch.zeros(x.shape[1], num_labels, requires_grad=True)
    b = torch.zeros(num_labels, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda feats: (((feats - mu) / sd) @ w + b).argmax(1)


def _finetune_predict(
    model_dir, tok, train: Examples, tests: dict[str, Examples], num_labels: int, cfg: EvalConfig, seed: int,
    device, progress: bool,
):  # fmt: skip
    """Fine-tune a sequence classifier on `train`; predicted label indices per test language."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    with quiet_hf():
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
    model.to(device).train()
    max_len = fit_length(model.config, cfg.classify_max_seq_len)
    texts, pairs, ys = train
    steps = cfg.classify_epochs * -(-len(texts) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.classify_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc=f"finetune seed {seed}", disable=not progress, leave=False)
    for _ in range(cfg.classify_epochs):
        order = torch.randperm(len(texts), generator=gen).tolist()
        for sl in batches(len(order), cfg.batch_size):
            idx = order[sl]
            batch_pairs = None if pairs is None else [pairs[i] for i in idx]
            enc = encode_padded(tok, [texts[i] for i in idx], max_len, batch_pairs).to(device)
            out = model(**enc, labels=torch.tensor([ys[i] for i in idx], device=device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            bar.update()
    bar.close()
    model.eval()
    preds = {}
    with torch.no_grad():
        for lang, (test_texts, test_pairs, _) in tests.items():
            out = []
            for sl in batches(len(test_texts), cfg.batch_size):
                batch_pairs = None if test_pairs is None else test_pairs[sl]
                enc = encode_padded(tok, test_texts[sl], max_len, batch_pairs).to(device)
                out.append(model(**enc).logits.argmax(1).cpu())
            preds[lang] = torch.cat(out).tolist()
    return preds


def evaluate_classification(run: EvalRun, task: TaskConfig | None = None) -> dict[str, object]:
    """Per test language: accuracy mean/std over seeds, per-seed accuracies, majority baseline, size.

    `task` defaults to the demo's topic task. Returns mode, train_lang, labels, pair (sentence-pair
    input), seeds, n_train (per seed), n_train_available, langs (per test language).
    """
    model_dir, corpus_dir, cfg, device, progress = run
    check_model_dir(model_dir)
    task = task or default_task(cfg, "classify")
    labels, train, raw_tests = load_task_data(task, corpus_dir)
    all_texts, all_pairs, all_ys = train
    samples = {s: balanced_sample(all_ys, cfg.classify_max_train, s) for s in cfg.classify_seeds}
    tests: dict[str, Examples] = {}
    for lang, data in raw_tests.items():
        if len(data[2]) > cfg.classify_max_test:
            keep = sorted(
                np.random.default_rng(cfg.seed).choice(len(data[2]), cfg.classify_max_test, replace=False)
            )
            data = _take(data, keep)
        tests[lang] = data
    tok = load_model_tokenizer(model_dir)
    preds: dict[int, dict[str, list[int]]] = {}
    if cfg.classify_mode == "probe":
        encoder = load_encoder(model_dir, device)

        def embed(texts: list[str], pairs: list[str] | None) -> torch.Tensor:
            return embed_texts(
                encoder,
                tok,
                texts,
                layer=cfg.retrieval_layer,
                max_len=cfg.classify_max_seq_len,
                batch_size=cfg.batch_size,
                device=device,
                pairs=pairs,
            )

        used = sorted(set().union(*samples.values()))
        train_feats = dict(zip(used, embed(*_take(train, used)[:2]), strict=True))
        test_feats = {lang: embed(texts, pairs) for lang, (texts, pairs, _) in tests.items()}
        for seed in tqdm(cfg.classify_seeds, desc=f"{task.name} probe", disable=not progress, leave=False):
            idx = samples[seed]
            predict = fit_probe(
                torch.stack([train_feats[i] for i in idx]),
                torch.tensor([all_ys[i] for i in idx]),
                len(labels),
                cfg.classify_l2,
            )
            preds[seed] = {lang: predict(f).tolist() for lang, f in test_feats.items()}
    else:
        for seed in cfg.classify_seeds:
            preds[seed] = _finetune_predict(
                model_dir, tok, _take(train, samples[seed]), tests, len(labels), cfg, seed, device, progress
            )
    per_lang = {}
    for lang, (_, _, gold) in tests.items():
        accs = [accuracy(preds[s][lang], gold) for s in cfg.classify_seeds]
        mean, std = mean_std(accs)
        per_lang[lang] = {
            "accuracy_mean": mean,
            "accuracy_std": std,
            "accuracy_per_seed": accs,
            "majority_baseline": majority_baseline(all_ys, gold),
            "n_test": len(gold),
        }
    return {
        "mode": cfg.classify_mode,
        "train_lang": task.train_lang,
        "labels": labels,
        "pair": all_pairs is not None,
        "seeds": list(cfg.classify_seeds),
        "n_train": {str(s): len(samples[s]) for s in cfg.classify_seeds},
        "n_train_available": len(all_ys),
        "langs": per_lang,
    }
