"""The UDHR builder (megameta.data.demo.udhr) on the fake tarball, and its parsers."""

from __future__ import annotations

import json

import pytest
from fake_archives import DECLARATIONS, declaration_html, index_js, rows

from megameta.data.demo import (
    dominant_script,
    load_udhr_heldout,
    parse_declaration,
    parse_paragraphs,
    parse_udhr_index,
    udhr_code_for,
)
from megameta.data.demo.sources import UDHR_HELDOUT_ARTICLES
from megameta.errors import InputError


def test_udhr_heldout_never_in_train(built):
    out, manifest = built
    train_files = sorted((out / "udhr" / "train").glob("*.jsonl"))
    assert [p.stem for p in train_files] == sorted(["068", "arb", "eng", "fra", "rus"])
    heldout_texts = set()
    for path in (out / "udhr" / "heldout").glob("*.jsonl"):
        heldout = rows(path)
        assert [r["article"] for r in heldout] == list(UDHR_HELDOUT_ARTICLES)
        heldout_texts |= {r["text"] for r in heldout}
    for path in train_files:
        train = rows(path)
        assert [r["article"] for r in train] == [n for n in range(31) if n not in UDHR_HELDOUT_ARTICLES]
        assert all(r["id"] == f"{path.stem}:{r['article']}" for r in train)
        assert not heldout_texts & {r["text"] for r in train}
    texts = {n: f"English text of article {n}" for n in UDHR_HELDOUT_ARTICLES}
    assert load_udhr_heldout(out, "eng") == {**texts, 23: "English text of article 23 clause two."}
    # Held-out rows keep the article's paragraphs (its numbered clauses) for paragraph retrieval.
    paragraphs = {r["article"]: r["paragraphs"] for r in rows(out / "udhr" / "heldout" / "eng.jsonl")}
    assert paragraphs == {
        **{n: [t] for n, t in texts.items()},
        23: ["English text of article 23", "clause two."],
    }
    assert all("paragraphs" not in r for path in train_files for r in rows(path))
    assert manifest["counts"]["udhr"]["skipped_declarations"] == ["tiny"]
    assert manifest["udhr_heldout_articles"] == list(range(21, 31))


def test_udhr_article_text_and_languages(built):
    out, _ = built
    articles = {r["article"]: r["text"] for r in rows(out / "udhr" / "train" / "eng.jsonl")}
    assert articles[0] == "English text of article 0 first & foremost, second paragraph."
    assert articles[1] == "English text of article 1"  # the <h2> title is dropped
    assert articles[11] == "English text of article 11 clause two."
    languages = json.loads((out / "udhr" / "languages.json").read_text(encoding="utf-8"))
    assert "tiny" not in languages
    assert languages["arb"] == {
        "bcp47": "ar",
        "iso6393": "arb",
        "name": "Lang arb (it's)",
        "direction": "rtl",
        "script": "Arabic",
        "articles": 31,
    }
    assert languages["rus"]["script"] == "Cyrillic" and languages["eng"]["script"] == "Latin"


def test_parse_declaration_handles_headings_and_lists():
    markup = declaration_html("eng", "en", "eng", "ltr", "A{n}", 12)
    articles = parse_declaration(markup)
    assert list(articles) == list(range(12))
    assert articles[11] == "A11 clause two."
    paragraphs = parse_paragraphs(markup)
    assert paragraphs[0] == ["A0 first & foremost,", "second paragraph."]
    assert paragraphs[11] == ["A11", "clause two."] and paragraphs[1] == ["A1"]


def test_parse_udhr_index_without_evaluating_js():
    index = parse_udhr_index(index_js())
    assert list(index) == [d[0] for d in DECLARATIONS]
    assert index["arb"]["direction"] == "rtl"
    assert index["eng"]["ohchr"] == "https://example.org/eng"  # value wrapped onto the next line
    assert index["eng"]["name"] == "Lang eng (it's)"
    assert index["eng"]["latitude"] == 1.5 and index["eng"]["longitude"] == -2


def test_udhr_code_for():
    index = parse_udhr_index(index_js())
    assert udhr_code_for("en", index) == "eng"
    assert udhr_code_for("fr", index) == "fra"  # standard text beats the earlier regional "068"
    assert udhr_code_for("ar", index) == "arb"
    variants = {"deu_1901": {"bcp47": "de-1901"}, "deu_1996": {"bcp47": "de-1996"}, "x": {"bcp47": "pt-PT"}}
    assert udhr_code_for("de", variants) == "deu_1996"
    assert udhr_code_for("pt", variants) == "x"
    with pytest.raises(InputError, match="'qq'"):
        udhr_code_for("qq", index)


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("All human beings are born free", "Latin"),
        ("Все люди рождаются свободными", "Cyrillic"),
        ("يولد جميع الناس أحرارًا", "Arabic"),
        ("人人生而自由", "Han"),
        ("すべての人間は、生まれながらにして自由である", "Japanese"),
        ("Ｆｕｌｌｗｉｄｔｈ", "Latin"),
        ("Όλοι οι άνθρωποι", "Greek"),
        ("123 !?", "Unknown"),
        ("Hello мир мир", "Cyrillic"),
    ],
)
def test_dominant_script(text, script):
    assert dominant_script(text) == script
