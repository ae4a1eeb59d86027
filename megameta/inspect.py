"""``megameta inspect``: human-readable summaries of shard dirs, checkpoint dirs and the environment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from megameta.data.shards import MANIFEST
from megameta.errors import InputError


def inspect_path(path: str | None, env: bool = False, alpha: float = 0.3) -> str:
    """Summaries of ``path`` (a shard dir, a phase dir, a checkpoints dir or one checkpoint) and/or the
    environment's kernels; InputError when there is nothing to show."""
    parts = []
    if env:
        from megameta.kernels import detect_kernels, format_kernel_report

        parts.append(format_kernel_report(detect_kernels()))
    if path:
        p = Path(path)
        if not p.exists():
            raise InputError(f"inspect: {p} does not exist")
        kind = manifest_kind(p)
        if kind == "shards":
            parts.append(inspect_shards(p, alpha))
        elif kind is not None:
            raise InputError(
                f"inspect: {p / MANIFEST} is a {kind!r} manifest; give a shard dir or a checkpoint dir"
            )
        else:
            parts.append(inspect_checkpoints(p))
    if not parts:
        raise InputError("inspect: give a path or --env")
    return "\n\n".join(parts)


def manifest_kind(root: Path) -> str | None:
    """The ``kind`` of ``root/manifest.json`` ("shards", "demo-corpus", ...), None without one.

    Manifests written before the field existed: a shard manifest is the one with a vocabulary hash.
    """
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"inspect: {path} is corrupt ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise InputError(f"inspect: {path}: expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind is None:
        return "shards" if "vocab_hash" in data else "demo-corpus"
    if not isinstance(kind, str):
        raise InputError(f"inspect: {path}: kind: expected a string, got {kind!r}")
    return kind


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
    """One line per checkpoint (phase, step, tokens, ZeRO stage, precision, integrity), then the newest's model."""
    from megameta.checkpoint import (
        LATEST,
        CheckpointMeta,
        check_integrity,
        checkpoints_dir,
        is_checkpoint,
        list_tags,
    )

    if is_checkpoint(path):
        root, tags = path.parent, [path.name]
    else:
        root = checkpoints_dir(path)
        tags = list_tags(root)
    if not tags:
        raise InputError(f"inspect: {path} is neither a shard dir (manifest.json) nor a checkpoint dir")
    latest = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
    lines = [
        f"checkpoints: {root} (latest -> {latest})",
        f"{'tag':<16}{'phase':<12}{'step':>8}{'tokens':>14}{'zero':>6}{'prec':>6}  status",
    ]
    metas: dict[str, CheckpointMeta] = {}
    for tag in tags:
        reason = check_integrity(root / tag)
        try:
            meta = metas[tag] = CheckpointMeta.read(root / tag)
            cols = f"{meta.phase:<12}{meta.step:>8}{meta.tokens_seen:>14,}{meta.zero_stage:>6}{meta.precision:>6}"
        except InputError:
            cols = f"{'?':<12}{'?':>8}{0:>14,}{'?':>6}{'?':>6}"
        lines.append(f"{tag:<16}{cols}  {'ok' if reason is None else 'INVALID: ' + reason}")
    if tags[-1] in metas:
        meta = metas[tags[-1]]
        lines.append(f"model: {json.dumps({k: v for k, v in meta.model.items() if v is not None})}")
        lines.append(f"langs: {', '.join(meta.langs)}")
        if meta.data_stream is not None:
            lines.append(f"data stream: {json.dumps(meta.data_stream, sort_keys=True)}")
        skipped = ", ".join(f"{a}..{b - 1}" for a, b in meta.skipped_samples) or "none"
        lines.append(
            f"divergence guard: {meta.skipped_steps} skipped steps, {meta.rollbacks} rollbacks, "
            f"samples skipped by rollbacks: {skipped}"
        )
    return "\n".join(lines)
