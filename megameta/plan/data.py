"""Data readiness per language: shards (token counts from the manifest), raw sources (sizes), or missing.

Reads only ``manifest.json`` and file sizes: nothing is opened or scanned, so a 100-language
corpus of terabytes is checked in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from megameta.config import RunConfig
from megameta.data.sampler import language_probs
from megameta.data.shards import MANIFEST


def _manifest(cfg: RunConfig) -> dict:
    path = Path(cfg.shard_dir) / MANIFEST
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _language(cfg: RunConfig, lang: str, manifest: dict) -> dict:
    entry = manifest.get("languages", {}).get(lang, {}).get("train")
    if entry is not None:
        return {
            "lang": lang,
            "status": "shards",
            "tokens": int(entry["tokens"]),
            "bytes": None,
            "missing": [],
        }
    present, missing, hf = 0, [], []
    for source in cfg.data.sources.get(lang, []):
        if source.startswith("hf:"):
            hf.append(source)  # streamed at preprocess time; nothing to size here
            continue
        path = cfg.source_path(source)
        if path.is_file():
            present += path.stat().st_size
        else:
            missing.append(str(path))
    status = "missing" if missing else "hf" if hf and not present else "raw"
    return {"lang": lang, "status": status, "tokens": None, "bytes": present, "missing": missing}


def readiness(cfg: RunConfig, phases: list[dict]) -> list[dict]:
    """One row per language the phases use, in first-use order.

    Each row: ``lang``, ``status`` (shards / raw / hf / missing), ``tokens`` (shards) or ``bytes``
    (raw files present), ``missing`` (paths), and, when every language of a phase has shards,
    ``tokens_needed`` (what the main phases, not the baseline, draw from it at their alpha) and ``epochs`` (passes over it).
    """
    manifest = _manifest(cfg)
    langs: list[str] = []
    for phase in phases:
        langs += [lang for lang in phase["langs"] if lang not in langs]
    rows = {lang: _language(cfg, lang, manifest) for lang in langs}
    for phase in (p for p in phases if not p["baseline"]):  # the baseline is a separate run
        counts = [rows[lang]["tokens"] for lang in phase["langs"]]
        if None in counts or not sum(counts):
            continue
        # The sampler draws sequences with q = p^alpha over token counts (megameta.data.sampler).
        q = language_probs([max(c, 1) for c in counts], phase["alpha"])
        for lang, share in zip(phase["langs"], q):
            rows[lang]["tokens_needed"] = rows[lang].get("tokens_needed", 0) + int(share * phase["tokens"])
    for row in rows.values():
        if "tokens_needed" in row:
            row["epochs"] = row["tokens_needed"] / max(row["tokens"], 1)
    return list(rows.values())
