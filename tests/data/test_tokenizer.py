"""The shared SentencePiece vocabulary: XLM-R id layout, round trip, language smoothing, vocabulary hash."""

from __future__ import annotations

import json

import pytest

from megameta.data.sampler import language_probs
from megameta.data.tokenizer import load_tokenizer, train_tokenizer, vocab_hash
from megameta.errors import InputError


def test_autotokenizer_loads_with_xlmr_special_tokens(tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tok.mask_token == "<mask>" and tok.mask_token_id == len(tok) - 1
    assert len(tok) == 300 + 2  # SentencePiece pieces + <pad> (fairseq offset) + <mask>


def test_encode_decode_round_trip(tiny_tokenizer, data_corpus):
    tok = load_tokenizer(tiny_tokenizer)
    for lang, files in data_corpus.items():
        with open(files[0], encoding="utf-8") as f:
            # lower-cased: a capital that starts only a few documents falls under character_coverage
            text = json.loads(f.readline())["text"].lower()
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id, lang
        assert tok.unk_token_id not in ids, lang
        assert tok.decode(ids, skip_special_tokens=True) == text, lang


def smoothed_probs(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """The one alpha formula over a dict of document counts (as the tokenizer's sample uses it)."""
    return dict(zip(counts, language_probs(list(counts.values()), alpha).tolist(), strict=True))


def test_smoothed_probs_follow_the_formula():
    q = smoothed_probs({"en": 900, "fr": 90, "ru": 10}, alpha=0.3)
    p = {"en": 0.9, "fr": 0.09, "ru": 0.01}
    z = sum(v**0.3 for v in p.values())
    assert q == pytest.approx({k: v**0.3 / z for k, v in p.items()})
    assert smoothed_probs({"en": 900, "fr": 90}, alpha=1.0) == pytest.approx(
        {"en": 0.9 / 0.99, "fr": 0.09 / 0.99}
    )
    assert smoothed_probs({"en": 900, "xx": 0}, alpha=0.3) == {"en": 1.0, "xx": 0.0}
    with pytest.raises(InputError, match="no documents or tokens"):
        language_probs([0, 0], 0.3)


def test_training_sample_upweights_small_languages(tmp_path, data_corpus):
    summary = train_tokenizer(data_corpus, tmp_path / "tok", vocab_size=200, max_sentences=1000, alpha=0.3)
    sentences = summary["sentences"]
    docs = {"en": 600, "fr": 240, "es": 120, "ru": 60}  # tests/data/conftest.py DOCS
    # ru holds 6% of the documents but gets its smoothed share (~17%) of the sample
    share = sentences["ru"] / sum(sentences.values())
    assert share == pytest.approx(smoothed_probs(docs, 0.3)["ru"], abs=0.03)
    assert share > 2 * docs["ru"] / sum(docs.values())
    assert summary["vocab_hash"] == vocab_hash(tmp_path / "tok")


def test_missing_tokenizer_and_empty_language_are_input_errors(tmp_path, data_corpus):
    with pytest.raises(InputError, match="tokenizer not found: .*sentencepiece.bpe.model"):
        load_tokenizer(tmp_path / "nowhere")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match=r"no documents for language\(s\) xx in .*empty.jsonl"):
        train_tokenizer(
            {**data_corpus, "xx": [str(empty)]}, tmp_path / "tok2", vocab_size=200, max_sentences=500
        )


def test_vocab_has_the_hf_tokenizers_ids(tiny_tokenizer):
    from megameta.data.tokenizer import Vocab

    tok, vocab = load_tokenizer(tiny_tokenizer), Vocab(tiny_tokenizer)
    ids = list(range(len(tok)))
    assert len(vocab) == len(tok) and vocab.convert_ids_to_tokens(ids) == tok.convert_ids_to_tokens(ids)
    for name in ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id", "mask_token_id"):
        assert getattr(vocab, name) == getattr(tok, name), name
