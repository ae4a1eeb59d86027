"""Fixtures for the evaluation tests: a tiny XLM-R model dir and the suite's synthetic corpus."""

from __future__ import annotations

import os
import random

import pytest
from corpus_fixture import make_corpus

WORDS = {
    "en": "the people read books about history art city river machine number god home food music war".split(),
    "fr": "les gens lisent des livres sur histoire art ville fleuve machine nombre dieu maison musique".split(),
    "es": "la gente lee libros sobre historia arte ciudad río máquina número dios casa comida música".split(),
    "ru": "люди читают книги об истории искусство город река машина число бог дом еда музыка".split(),
}


def _sentence(rng: random.Random, lang: str, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS[lang]) for _ in range(n))


def build_tiny_model_dir(path: str, seed: int = 0) -> str:
    """SentencePiece (XLM-R id layout) + random 2-layer XLMRobertaForMaskedLM saved as an HF dir."""
    import sentencepiece as spm
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaTokenizer

    rng = random.Random(seed)
    os.makedirs(path, exist_ok=True)
    text = os.path.join(path, "spm_train.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write("\n".join(_sentence(rng, lang) for lang in WORDS for _ in range(150)))
    # XLM-R's SentencePiece model uses spm's default ids (unk 0, bos 1, eos 2, no pad); the HF
    # tokenizer adds the fairseq offset: <s>0 <pad>1 </s>2 <unk>3, pieces shifted by 1, <mask> last.
    spm.SentencePieceTrainer.train(
        input=text,
        model_prefix=os.path.join(path, "sentencepiece.bpe"),
        vocab_size=200,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    os.remove(text)
    XLMRobertaTokenizer.from_pretrained(path).save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    XLMRobertaForMaskedLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return build_tiny_model_dir(str(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> str:
    # 48 training articles per language (12 test), every 8th unlabeled: the classifier sees 42 labeled
    # training and 11 labeled test articles per language.
    return str(make_corpus(tmp_path_factory.mktemp("tiny_corpus"), docs_per_lang=48, unlabeled_every=8))
