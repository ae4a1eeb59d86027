"""Evaluation config: one flat dataclass of primitives, filled by the generic YAML loader."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from megameta.data.demo.sources import LABELS, udhr_file, wiki_file
from megameta.errors import ConfigError

#: The eight topic labels shared by the en/fr/es Wikipedia summaries (DESIGN.md section 5); the corpus
#: builder's table is the single source, so label indices agree between corpus and evaluation.
CANONICAL_LABELS: list[str] = list(LABELS)

CLASSIFY_MODES = ("probe", "finetune")


def _default_mlm_files() -> dict[str, list[str]]:
    files = {lang: [wiki_file(lang, "test")] for lang in ("en", "fr", "es")}
    # Ten held-out UDHR articles each: small, but the only held-out text in other scripts.
    files.update(
        {
            lang: [udhr_file("heldout", code)]
            for lang, code in (("ru", "rus"), ("ar", "arb"), ("zh", "cmn_hans"))
        }
    )
    return files


@dataclass
class EvalConfig:
    """What `megameta evaluate` measures and how. Paths are relative to the corpus dir."""

    #: Run the held-out MLM loss / perplexity part.
    mlm: bool = True
    #: Run the cross-lingual UDHR article retrieval part.
    retrieval: bool = True
    #: Run the zero-shot cross-lingual topic classification part.
    classify: bool = True

    #: Language -> held-out files for MLM loss (``.jsonl`` with a ``text`` field, or ``.txt`` with
    #: one document per non-empty line). Relative paths are resolved against the corpus dir.
    #: Only held-out text (the wiki ``test`` split, UDHR ``heldout``) gives an honest number.
    mlm_files: dict[str, list[str]] = field(default_factory=_default_mlm_files)
    #: At most this many documents per language (the first ones, in file order).
    mlm_max_docs: int = 200
    #: Tokens per sequence, ``<s>`` and ``</s>`` included (MLM packing and retrieval truncation).
    max_seq_len: int = 128
    #: Sequences per forward pass (all parts).
    batch_size: int = 16
    #: Fraction of maskable (non-special, non-pad) tokens masked for the MLM loss.
    mask_prob: float = 0.15
    #: Seed for the evaluation mask and the test-set subsample; fixed so runs are comparable.
    seed: int = 1234
    #: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or a torch device string.
    device: str = "auto"

    #: UDHR language codes (file names under ``udhr/heldout/``) compared pairwise. Mixing scripts
    #: matters: the report separates same-script from cross-script pairs.
    retrieval_langs: list[str] = field(
        default_factory=lambda: [
            *("eng", "fra", "spa", "deu_1996"),  # Latin
            *("rus", "ukr"),  # Cyrillic
            *("ell_monotonic", "arb", "hin", "cmn_hans"),  # Greek, Arabic, Devanagari, Han
        ]
    )
    #: Hidden-state layer that is mean-pooled, in Hugging Face ``hidden_states`` indexing:
    #: 0 = embedding output, i = output of layer i, -1 = last layer, -2 = the one before it.
    #: Middle layers are often better aligned across languages than the last one.
    retrieval_layer: int = -1

    #: Language whose ``wiki/<lang>/train.jsonl`` labeled examples train the classifier.
    classify_train_lang: str = "en"
    #: Languages whose ``wiki/<lang>/test.jsonl`` is classified (zero-shot unless it is the train lang).
    classify_test_langs: list[str] = field(default_factory=lambda: ["en", "fr", "es"])
    #: One classifier per seed; the report gives mean and std over them.
    classify_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    #: ``"probe"``: frozen encoder, mean-pooled features of ``retrieval_layer``, multinomial logistic
    #: regression by L-BFGS (seconds on CPU, convex, measures the representation itself).
    #: ``"finetune"``: ``AutoModelForSequenceClassification`` trained end to end with AdamW (the
    #: paper's protocol; needs a GPU beyond tiny models).
    classify_mode: str = "probe"
    #: Passes over the training examples (``finetune`` mode).
    classify_epochs: int = 3
    #: Peak AdamW learning rate, linearly decayed to 0 (``finetune`` mode). 1e-4 suits tiny models;
    #: use 1e-5..3e-5 for XLM-R base.
    classify_lr: float = 1e-4
    #: L2 penalty on the probe weights (``probe`` mode), applied to standardized features.
    classify_l2: float = 1e-3
    #: At most this many labeled training examples, drawn class-balanced (round robin over labels).
    classify_max_train: int = 2000
    #: At most this many test examples per language (a seeded subsample in natural class proportions).
    classify_max_test: int = 500
    #: Tokens per classified document (truncated).
    classify_max_seq_len: int = 128

    def validate(self, path: str = "evaluate") -> None:
        """Raise `ConfigError` naming ``<path>.<field>`` for the first bad value."""
        for name in ("mlm", "retrieval", "classify"):
            _check_type(self, name, bool, path)
        _check_type(self, "mlm_files", dict, path)
        for lang, files in self.mlm_files.items():
            if not isinstance(lang, str) or not lang:
                raise ConfigError(f"{path}.mlm_files: keys must be language names, got {lang!r}")
            if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
                raise ConfigError(
                    f"{path}.mlm_files.{lang}: must be a non-empty list of paths, got {files!r}"
                )
        if self.mlm and not self.mlm_files:
            raise ConfigError(f"{path}.mlm_files: must name at least one language when mlm is on")
        for name in ("mlm_max_docs", "max_seq_len", "batch_size", "classify_epochs"):
            _check_type(self, name, int, path)
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("classify_max_train", "classify_max_test", "classify_max_seq_len"):
            _check_type(self, name, int, path)
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_seq_len < 3 or self.classify_max_seq_len < 3:
            name = "max_seq_len" if self.max_seq_len < 3 else "classify_max_seq_len"
            raise ConfigError(f"{path}.{name}: must be >= 3 (<s>, a token, </s>), got {getattr(self, name)}")
        _check_type(self, "mask_prob", float, path)
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"{path}.mask_prob: must be in (0, 1), got {self.mask_prob}")
        _check_type(self, "seed", int, path)
        _check_type(self, "device", str, path)
        _check_type(self, "retrieval_layer", int, path)
        _check_str_list(self, "retrieval_langs", path)
        if self.retrieval and len(self.retrieval_langs) < 2:
            raise ConfigError(
                f"{path}.retrieval_langs: needs at least 2 languages, got {self.retrieval_langs}"
            )
        if len(set(self.retrieval_langs)) != len(self.retrieval_langs):
            raise ConfigError(f"{path}.retrieval_langs: has duplicates: {self.retrieval_langs}")
        _check_type(self, "classify_train_lang", str, path)
        _check_str_list(self, "classify_test_langs", path)
        _check_type(self, "classify_seeds", list, path)
        if not self.classify_seeds or not all(_is_int(s) for s in self.classify_seeds):
            raise ConfigError(
                f"{path}.classify_seeds: must be a non-empty list of ints, got {self.classify_seeds}"
            )
        _check_type(self, "classify_mode", str, path)
        if self.classify_mode not in CLASSIFY_MODES:
            raise ConfigError(
                f"{path}.classify_mode: must be one of {list(CLASSIFY_MODES)}, got {self.classify_mode!r}"
            )
        for name in ("classify_lr", "classify_l2"):
            _check_type(self, name, float, path)
        if not (math.isfinite(self.classify_lr) and self.classify_lr > 0):
            raise ConfigError(f"{path}.classify_lr: must be > 0, got {self.classify_lr}")
        if not (math.isfinite(self.classify_l2) and self.classify_l2 >= 0):
            raise ConfigError(f"{path}.classify_l2: must be >= 0, got {self.classify_l2}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(cfg: EvalConfig, name: str, kind: type, path: str) -> None:
    value = getattr(cfg, name)
    if kind is int:
        ok = _is_int(value)
    elif kind is float:  # YAML writes 1 for 1.0; an int is an acceptable float
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{path}.{name}: must be {kind.__name__}, got {type(value).__name__} {value!r}")


def _check_str_list(cfg: EvalConfig, name: str, path: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}.{name}: must be a list of non-empty strings, got {value!r}")
