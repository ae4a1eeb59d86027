"""Train the shared SentencePiece vocabulary and save it as a Hugging Face tokenizer dir.

The vocabulary is trained on a language-smoothed sample of the multilingual
corpus (as XLM-R): language l contributes a share q_l = p_l^alpha / sum_k p_k^alpha
of the training sentences (:func:`megameta.data.sampler.language_probs`), where p_l
is its share of documents. Low-resource
languages are repeated to reach their share, high-resource ones subsampled.

The saved dir holds ``sentencepiece.bpe.model`` plus the HF tokenizer files, so
``AutoTokenizer.from_pretrained(dir)`` gives XLM-R's id layout: ``<s>``=0,
``<pad>``=1, ``</s>``=2, ``<unk>``=3, SentencePiece piece i -> i + 1, ``<mask>`` last.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from megameta.data.readers import iter_documents
from megameta.data.sampler import language_probs
from megameta.errors import InputError

SPM_FILE = "sentencepiece.bpe.model"
MAX_SENTENCE_BYTES = 8192


def spm_path(tokenizer_dir: str | Path) -> Path:
    """The dir's SentencePiece model; a clear error when it is missing."""
    path = Path(tokenizer_dir) / SPM_FILE
    if not path.exists():
        raise InputError(f"tokenizer not found: {path} (run `megameta tokenizer` first)")
    return path


def vocab_hash(tokenizer_dir: str | Path) -> str:
    """sha256 of the SentencePiece model: shards record it, training refuses a mismatch."""
    return hashlib.sha256(spm_path(tokenizer_dir).read_bytes()).hexdigest()


def load_tokenizer(tokenizer_dir: str | Path):
    """The HF tokenizer saved by :func:`train_tokenizer`."""
    from transformers import AutoTokenizer

    spm_path(tokenizer_dir)  # clear error when missing
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


class Vocab:
    """XLM-R's id layout over the SentencePiece model, without importing ``transformers``.

    ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3, SentencePiece piece i (i >= 3) -> id i + 1,
    ``<mask>`` last: the ids of the saved HF tokenizer (fairseq's dictionary). Training and
    preprocessing use this; :func:`check_hf_layout` refuses a tokenizer dir whose HF files
    disagree. It answers the few questions the data path asks of a tokenizer, with HF's names.
    """

    bos_token_id, pad_token_id, eos_token_id, unk_token_id = 0, 1, 2, 3
    OFFSET = 1  # HF id = SentencePiece id + OFFSET (SentencePiece's own <unk> 0 -> unk_token_id)
    SPECIAL = ("<s>", "<pad>", "</s>", "<unk>")

    def __init__(self, tokenizer_dir: str | Path):
        import sentencepiece as spm

        path = spm_path(tokenizer_dir)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as e:
            raise InputError(
                f"{path}: not a SentencePiece model ({e}); rebuild it with `megameta tokenizer`"
            ) from None
        self.mask_token_id = self.sp.get_piece_size() + self.OFFSET

    def __len__(self) -> int:
        return self.mask_token_id + 1

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [
            self.SPECIAL[i] if i < 4 else "<mask>" if i == self.mask_token_id else self.sp.id_to_piece(i - 1)
            for i in ids
        ]

    def encode(self, texts: list[str]) -> list[list[int]]:
        """SentencePiece's ids for ``texts`` (no specials); :meth:`to_ids` maps them to this layout."""
        return self.sp.encode(texts, num_threads=1)

    @classmethod
    def to_ids(cls, spm_ids: np.ndarray) -> np.ndarray:
        """SentencePiece ids (int64, modified in place) -> ids of this layout."""
        spm_ids += cls.OFFSET
        spm_ids[spm_ids == cls.OFFSET] = cls.unk_token_id
        return spm_ids


def check_hf_layout(tokenizer_dir: str | Path) -> Vocab:
    """The dir's :class:`Vocab`, after checking that its HF tokenizer has the same ids."""
    vocab, tok = Vocab(tokenizer_dir), load_tokenizer(tokenizer_dir)
    n = len(vocab)
    probes = sorted({0, 1, 2, 3, 4, n // 2, n - 2, n - 1} & set(range(n)))
    specials = ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id", "mask_token_id")
    if (
        len(tok) != n
        or any(getattr(tok, a) != getattr(vocab, a) for a in specials)
        or tok.convert_ids_to_tokens(probes) != vocab.convert_ids_to_tokens(probes)
        or vocab.sp.unk_id() != 0
    ):
        raise InputError(
            f"{tokenizer_dir}: the Hugging Face tokenizer does not use XLM-R's id layout over "
            f"{SPM_FILE} (<s>=0 <pad>=1 </s>=2 <unk>=3, piece i -> id i+1, <mask> last); "
            "rebuild it with `megameta tokenizer`"
        )
    return vocab


def _sample_sentences(
    sources: dict[str, list[str]], text_field: str, fmt: str, alpha: float, total: int, seed: int, out
) -> dict[str, int]:
    """Write the language-smoothed sample to ``out``, one document per line; returns lines per language.

    Two streaming passes over the sources, holding one document at a time: pass 1 counts
    documents per language, pass 2 keeps each document of language l ``k`` times, with
    k = floor(r) or ceil(r) at random (mean r = q_l * total / n_l, seeded by (seed, l)).
    Memory does not depend on the corpus size; the sample goes to disk.
    """
    counts = {lang: sum(1 for _ in _docs(files, text_field, fmt)) for lang, files in sources.items()}
    empty = [lang for lang, n in counts.items() if n == 0]
    if empty:
        raise InputError(
            f"no documents for language(s) {', '.join(empty)} in {', '.join(sum((sources[lang] for lang in empty), []))}"
        )
    langs = list(counts)
    q = dict(zip(langs, language_probs([counts[lang] for lang in langs], alpha).tolist(), strict=True))
    written = {}
    # Pass 2 keeps each document with probability quota/n; quota > n repeats documents.
    for lang, files in sources.items():
        quota = q[lang] * total
        rng = random.Random(f"{seed}:{lang}")
        repeats, frac = divmod(quota / counts[lang], 1.0)
        written[lang] = 0
        for doc in _docs(files, text_field, fmt):
            k = int(repeats) + (rng.random() < frac)
            if k:
                line = (
                    doc.replace("\n", " ")
                    .encode("utf-8")[:MAX_SENTENCE_BYTES]
                    .decode("utf-8", errors="ignore")
                )
                out.write((line + "\n") * k)
                written[lang] += k
    return written


def _docs(files: list[str], text_field: str, fmt: str):
    for path in files:
        yield from iter_documents(path, text_field, fmt=fmt)


def train_tokenizer(
    sources: dict[str, list[str]],
    out_dir: str | Path,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    alpha: float = 0.3,
    max_sentences: int = 200_000,
    character_coverage: float = 0.9995,
    text_field: str = "text",
    seed: int = 0,
    num_threads: int = 2,
    fmt: str = "lines",
) -> dict:
    """Train the shared vocabulary on ``sources`` (lang -> files) and write an HF tokenizer dir.

    Returns a summary dict (sentences per language, vocab size, hash). The dir appears
    atomically: it is built under a temporary name and renamed when complete. ``fmt`` is the
    plain-text layout (``lines`` or ``paragraphs``).

    Memory: sampling streams the sources (:func:`_sample_sentences`); SentencePiece then loads
    at most ``2 * max_sentences`` lines of at most ``MAX_SENTENCE_BYTES`` each, so the peak
    depends on ``max_sentences`` and the document length, never on the corpus size
    (``tests/reliability/test_tokenizer_load.py`` asserts it on 1 GB of compressed text).
    """
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out_dir.parent))
    try:
        sample_path = work / "sample.txt"
        with open(sample_path, "w", encoding="utf-8") as f:
            written = _sample_sentences(sources, text_field, fmt, alpha, max_sentences, seed, f)
        spm.SentencePieceTrainer.train(
            input=str(sample_path),
            model_prefix=str(work / "spm"),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            max_sentence_length=MAX_SENTENCE_BYTES,
            input_sentence_size=max_sentences * 2,
            shuffle_input_sentence=True,
            num_threads=num_threads,
            seed_sentencepiece_size=min(1_000_000, max_sentences * 10),
            # ids 0-2 as fairseq's dictionary expects; the HF tokenizer adds <pad> and <mask> around them
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            minloglevel=2,
        )
        hf_dir = work / "hf"
        hf_dir.mkdir()
        shutil.copy(work / "spm.model", hf_dir / SPM_FILE)
        from transformers import XLMRobertaTokenizer

        tok = XLMRobertaTokenizer.from_pretrained(str(hf_dir))
        tok.model_max_length = 512
        tok.save_pretrained(str(hf_dir))
        summary = {
            "vocab_size": len(tok),
            "spm_pieces": vocab_size,
            "model_type": model_type,
            "alpha": alpha,
            "sentences": written,
            "sample_bytes": sample_path.stat().st_size,
            "vocab_hash": vocab_hash(hf_dir),
        }
        (hf_dir / "megameta_tokenizer.json").write_text(json.dumps(summary, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        hf_dir.rename(out_dir)
        return summary
    except RuntimeError as e:  # sentencepiece reports bad settings (e.g. vocab too large) this way
        raise InputError(f"SentencePiece training failed: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def memory_bound_mb(sample_bytes: int) -> int:
    """Peak memory (PSS, MiB) of :func:`train_tokenizer` whose sample holds ``sample_bytes`` of text.

    The corpus size does not enter: sampling streams the sources. SentencePiece's trainer holds the
    sample with its suffix arrays (about 10 bytes per sample byte); the rest is the interpreter,
    SentencePiece and transformers. Measured on 1 GB of compressed text with a 20,000-sentence
    (~30 MB) sample: 595 MiB (``tests/reliability/test_tokenizer_load.py``). The sample is at most
    ``2 * max_sentences * MAX_SENTENCE_BYTES``, so ``max_sentences`` caps the memory.
    """
    return 256 + 16 * -(-sample_bytes // (1 << 20))
