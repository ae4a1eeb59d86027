"""Data-pipeline fixtures: a small synthetic multilingual corpus, a tiny tokenizer, preprocessed shards."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = {
    "en": "the of and in is was a to for with on by from river city music number king war".split(),
    "fr": "le la de et en est était un une pour avec sur par fleuve ville musique nombre roi".split(),
    "es": "el la de y en es fue un una para con sobre por río ciudad música número rey".split(),
    "ru": "и в не на что он это как по но из она к у за мы река город".split(),
}
SYLLABLES = {
    "en": "ba ce di fo gu ha je ki lo mu na pe qi ro su ta ve wi xo yu ze th sh ng".split(),
    "fr": "bé cè da fê gi ho jo ku là mé né pô qu ré sa tè vu ou eau oi ch gn".split(),
    "es": "bá ce dí fo gu há je ki ló mu ña pe qui rró su ta ve lla ch ño ue".split(),
    "ru": "ба ве ги до же зи ка ло ме ну по ри сы ту фе хо цы че ша щу ю я".split(),
}
DOCS = {"en": 600, "fr": 240, "es": 120, "ru": 60}


def _lexicon(lang: str) -> list[str]:
    rng = random.Random(f"lex:{lang}")
    made = ["".join(rng.choice(SYLLABLES[lang]) for _ in range(rng.randint(1, 3))) for _ in range(150)]
    return WORDS[lang] + made


def write_lang(path: Path, lang: str, n_docs: int, seed: int, fmt: str = "jsonl") -> Path:
    rng = random.Random(f"{seed}:{lang}")
    words = _lexicon(lang)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_docs):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 60))).capitalize() + "."
            f.write((json.dumps({"text": text}, ensure_ascii=False) if fmt == "jsonl" else text) + "\n")
    return path


@pytest.fixture(scope="session")
def data_corpus(tmp_path_factory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("data_corpus")
    return {lang: [str(write_lang(root / f"{lang}.jsonl", lang, n, seed=0))] for lang, n in DOCS.items()}


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory, data_corpus) -> Path:
    from megameta.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(data_corpus, out, vocab_size=300, max_sentences=2000, model_type="unigram")
    return out


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory, data_corpus, tiny_tokenizer) -> Path:
    from megameta.data.preprocess import preprocess

    out = tmp_path_factory.mktemp("shards") / "shards"
    preprocess(
        {"train": data_corpus, "valid": {"en": data_corpus["en"]}}, tiny_tokenizer, out, progress=False
    )
    return out
