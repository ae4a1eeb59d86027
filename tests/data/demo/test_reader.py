"""The one reader of the corpus layout (megameta.data.demo.reader), on the suite's synthetic corpus."""

from __future__ import annotations

import json

import pytest
from corpus_fixture import SCRIPTS, UNMAPPED_TOPIC, make_corpus, split_sizes, udhr_article_text

from megameta.data.demo import load_documents, load_labeled, load_udhr_heldout, read_jsonl, udhr_scripts
from megameta.data.demo.sources import LABELS, UDHR_HELDOUT_ARTICLES
from megameta.errors import InputError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), docs_per_lang=24, unlabeled_every=8)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_load_labeled_keeps_labeled_articles_in_file_order(corpus):
    rows = _rows(corpus / "wiki" / "es" / "train.jsonl")
    assert len(rows) == split_sizes(24)["train"]
    assert [r["topic"] for r in rows if r["label"] is None] == [UNMAPPED_TOPIC["es"]] * 3  # i = 7, 15, 23
    labeled = load_labeled(corpus, "es", "train")
    assert labeled == [(r["text"], LABELS.index(r["label"])) for r in rows if r["label"] is not None]
    assert len(labeled) == 21


def test_load_udhr_heldout_and_scripts(corpus):
    heldout = load_udhr_heldout(corpus, "rus")
    assert heldout == {a: udhr_article_text("ru", a) for a in UDHR_HELDOUT_ARTICLES}
    assert udhr_scripts(corpus, ["eng", "rus", "xyz"]) == {
        "eng": SCRIPTS["eng"],
        "rus": "Cyrillic",
        "xyz": "unknown",
    }


def test_udhr_records_of_one_article_are_joined_in_article_order(tmp_path):
    path = tmp_path / "udhr" / "heldout" / "x.jsonl"
    path.parent.mkdir(parents=True)
    lines = [{"article": 22, "text": "b"}, {"article": 21, "text": "a1"}, {"article": 21, "text": "a2"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert list(load_udhr_heldout(tmp_path, "x").items()) == [(21, "a1\na2"), (22, "b")]


def test_load_documents_jsonl_and_text(corpus, tmp_path):
    rows = _rows(corpus / "wiki" / "en" / "test.jsonl")
    assert load_documents(corpus / "wiki" / "en" / "test.jsonl", 4) == [r["text"] for r in rows[:4]]
    text = tmp_path / "docs.txt"
    text.write_text("first doc\n\n  \nsecond doc\nthird\n", encoding="utf-8")
    assert load_documents(text, 2) == ["first doc", "second doc"]
    assert load_documents(str(text), 10) == ["first doc", "second doc", "third"]


def test_errors_name_the_file(corpus, tmp_path):
    with pytest.raises(InputError, match=str(tmp_path / "wiki" / "en" / "test.jsonl")):
        load_labeled(tmp_path, "en", "test")
    with pytest.raises(InputError, match=r"heldout.eng\.jsonl"):
        load_udhr_heldout(tmp_path, "eng")
    with pytest.raises(InputError, match=r"udhr.languages\.json"):
        udhr_scripts(tmp_path, ["eng"])
    bad = tmp_path / "wiki" / "en" / "train.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"text": "a", "label": "People"}\nnot json\n')
    with pytest.raises(InputError, match=r"train\.jsonl:2: not valid JSON"):
        list(read_jsonl(bad))
    bad.write_text('{"text": "a", "label": "Cooking"}\n')
    with pytest.raises(InputError, match=r"train\.jsonl: record 1 has label 'Cooking'"):
        load_labeled(tmp_path, "en", "train")
    bad.write_text('{"text": "a", "label": null}\n')
    with pytest.raises(InputError, match=r"train\.jsonl: no labeled records"):
        load_labeled(tmp_path, "en", "train")
    with pytest.raises(InputError, match=r"docs\.txt"):
        load_documents(tmp_path / "docs.txt", 3)
