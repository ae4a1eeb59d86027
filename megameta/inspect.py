"""``megameta inspect``: human-readable summaries of shard dirs, checkpoint dirs and the environment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from megameta.errors import InputError


def inspect_path(path: str | None, env: bool = False, alpha: float = 0.3) -> str:
    parts = []
    if env:
        from megameta.kernels import detect_kernels, format_kernel_report

        parts.append(format_kernel_report(detect_kernels()))
    if path:
        p = Path(path)
        if not p.exists():
            raise InputError(f"inspect: {p} does not exist")
        if (p / "manifest.json").exists() and (p / "manifest.json").read_text().find('"vocab_hash"') >= 0:
            parts.append(inspect_shards(p, alpha))
        else:
            parts.append(inspect_checkpoints(p))
    if not parts:
        raise InputError("inspect: give a path or --env")
    return "\n\n".join(parts)


def inspect_shards(root: Path, alpha: float) -> str:
    from megameta.data.sampler import language_probs
    from megameta.data.shards import TokenShard, read_manifest

    manifest = read_manifest(root)
    langs = sorted(manifest["languages"])
    train_tokens = np.array(
        [manifest["languages"][lang].get("train", {}).get("tokens", 0) for lang in langs], dtype=np.float64
    )
    probs = language_probs(np.maximum(train_tokens, 1), alpha) if train_tokens.sum() else np.zeros(len(langs))
    share = train_tokens / max(train_tokens.sum(), 1)
    lines = [
        f"shards: {root} (vocab {manifest['vocab_size']}, {manifest['dtype']}, vocab hash {manifest['vocab_hash'][:12]})"
    ]
    lines.append(
        f"{'lang':<8}{'split':<7}{'docs':>10}{'tokens':>14}{'p':>9}{'q(alpha=' + str(alpha) + ')':>16}"
    )
    for i, lang in enumerate(langs):
        for split, e in manifest["languages"][lang].items():
            pq = f"{share[i]:>9.4f}{probs[i]:>16.4f}" if split == "train" else ""
            lines.append(f"{lang:<8}{split:<7}{e['docs']:>10,}{e['tokens']:>14,}{pq}")
    first = next((lang for lang in langs if "train" in manifest["languages"][lang]), None)
    if first is not None:
        shard = TokenShard(root / first / "train")
        tok_dir = root.parent / "tokenizer"
        sample = shard.doc(0)[:48]
        decoded = str(sample.tolist())
        if (tok_dir / "sentencepiece.bpe.model").exists():
            from megameta.data.tokenizer import load_tokenizer

            decoded = load_tokenizer(tok_dir).decode(sample.tolist())
        lines.append(f"sample ({first}/train doc 0, first 48 tokens): {decoded}")
    return "\n".join(lines)


def inspect_checkpoints(path: Path) -> str:
    from megameta.train import checkpoint as ckpt

    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if (root / ckpt.META).exists():
        root, only = root.parent, [root.name]
    else:
        only = None
    tags = only or ckpt.list_tags(root)
    if not tags:
        raise InputError(f"inspect: {path} is neither a shard dir (manifest.json) nor a checkpoint dir")
    latest = (root / ckpt.LATEST).read_text().strip() if (root / ckpt.LATEST).exists() else None
    lines = [
        f"checkpoints: {root} (latest -> {latest})",
        f"{'tag':<16}{'phase':<12}{'step':>8}{'tokens':>14}{'zero':>6}{'prec':>6}  status",
    ]
    for tag in tags:
        reason = ckpt.validate(root / tag)
        try:
            meta = ckpt.read_meta(root / tag)
        except (OSError, json.JSONDecodeError):
            meta = {}
        lines.append(
            f"{tag:<16}{meta.get('phase', '?'):<12}{meta.get('step', '?'):>8}{meta.get('tokens_seen', 0):>14,}"
            f"{meta.get('zero_stage', '?'):>6}{meta.get('precision', '?'):>6}  {'ok' if reason is None else 'INVALID: ' + reason}"
        )
    if tags and (root / tags[-1] / ckpt.META).exists():
        meta = ckpt.read_meta(root / tags[-1])
        model = meta.get("model", {})
        lines.append(f"model: {json.dumps({k: v for k, v in model.items() if v is not None})}")
        lines.append(f"langs: {', '.join(meta.get('langs', []))}")
    return "\n".join(lines)
