"""Evaluation config: one flat dataclass of primitives plus a list of tasks, filled by the generic YAML loader.

A task (`TaskConfig`) is one evaluation on files the user has: ``classification``, ``retrieval`` or
``mlm``. When ``evaluate.tasks`` is empty, `EvalConfig.task_list` builds the demo's three tasks from the
flat fields (``mlm_files``, ``retrieval_langs``, ``classify_*``), so configs written before tasks existed
evaluate exactly as they did.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from megameta.data.demo.sources import DEMO_UDHR_LANGS, LABELS, UDHR_LANGUAGES_FILE, udhr_file, wiki_file
from megameta.errors import ConfigError

#: The eight topic labels shared by the en/fr/es Wikipedia summaries (DESIGN.md section 5); the corpus
#: builder's table is the single source, so label indices agree between corpus and evaluation.
CANONICAL_LABELS: list[str] = list(LABELS)

CLASSIFY_MODES = ("probe", "finetune")

#: Task types, in the order the demo's default tasks run.
TASK_TYPES = ("mlm", "retrieval", "classification")
#: The demo's default tasks: name -> type. Their metrics keep their historical unprefixed keys
#: (``ppl[en]``, ``retrieval``, ``acc[fr]``); every other task's keys start with ``<name>:``.
DEFAULT_TASKS = {"mlm": "mlm", "retrieval": "retrieval", "classify": "classification"}
#: The EvalConfig switch that turns each task type on or off.
TYPE_SWITCH = {"mlm": "mlm", "retrieval": "retrieval", "classification": "classify"}
#: Default task type -> {task field: the flat EvalConfig field it is built from}, for error messages.
DEFAULT_FIELDS = {
    "mlm": {"files": "mlm_files"},
    "retrieval": {"files": "retrieval_langs", "scripts_file": "retrieval_langs"},
    "classification": {"train": "classify_train_lang", "test": "classify_test_langs"},
}
#: Task names become metric keys (``xnli:acc[fr]``) and file names (``xnli.png``).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Fields of `TaskConfig` each type reads (besides name and type); any other field set is an error.
TASK_FIELDS = {
    "mlm": ("files",),
    "retrieval": ("files", "pairs", "scripts", "scripts_file"),
    "classification": ("train_lang", "train", "test", "labels"),
}


def _default_mlm_files() -> dict[str, list[str]]:
    files = {lang: [wiki_file(lang, "test")] for lang in ("en", "fr", "es")}
    # Ten held-out UDHR articles each: small, but the only held-out text of the demo's other languages.
    files.update({lang: [udhr_file("heldout", code)] for lang, code in DEMO_UDHR_LANGS.items()})
    return files


@dataclass
class TaskConfig:
    """One evaluation task on files the user has. Paths are relative to the corpus dir (or absolute).

    Readers and file layouts: :mod:`megameta.evaluate.readers`; the guide: docs/evaluation.md.
    """

    #: Names the task in the report and prefixes its metric keys (``xnli:acc[fr]``).
    name: str
    #: ``classification``, ``retrieval`` or ``mlm``.
    type: str
    #: ``mlm``: language -> held-out file(s) (``.jsonl`` with a ``text`` field, or one document per
    #: non-empty line). ``retrieval``: language -> one file, all of them aligned with each other (line
    #: i, or the jsonl records with the same ``article``, is the same item in every language).
    files: dict[str, str | list[str]] = field(default_factory=dict)
    #: ``retrieval``: aligned pairs whose files align only within the pair, e.g. Tatoeba's
    #: ``{fra: tatoeba.fra-eng.fra, eng: tatoeba.fra-eng.eng}``; each pair is scored both directions.
    pairs: list[dict[str, str]] = field(default_factory=list)
    #: ``retrieval``: language -> script name, for the same-script / cross-script means.
    scripts: dict[str, str] = field(default_factory=dict)
    #: ``retrieval``: a JSON object language -> {"script": ...} (the UDHR ``languages.json`` layout),
    #: read for the languages `scripts` does not name.
    scripts_file: str = ""
    #: ``classification``: language of the `train` file (the in-language score; others are zero-shot).
    train_lang: str = ""
    #: ``classification``: the labeled training file.
    train: str = ""
    #: ``classification``: language -> labeled test file (XNLI's one file for all languages may be
    #: named for each of them: rows are picked by its ``language`` column).
    test: dict[str, str] = field(default_factory=dict)
    #: ``classification``: the label set, in index order; empty = the sorted labels of the train file.
    labels: list[str] = field(default_factory=list)

    def validate(self, path: str = "task") -> None:
        """Raise `ConfigError` naming ``<path>.<field>`` for the first bad value."""
        for name in ("name", "type", "scripts_file", "train_lang", "train"):
            _check_type(self, name, str, path)
        if not _NAME.match(self.name):
            raise ConfigError(
                f"{path}.name: must be letters, digits, '_', '-' or '.', not starting with a symbol, "
                f"got {self.name!r}"
            )
        if self.type not in TASK_TYPES:
            raise ConfigError(f"{path}.type: must be one of {list(TASK_TYPES)}, got {self.type!r}")
        for f in dataclasses.fields(self):
            if f.name in ("name", "type") or f.name in TASK_FIELDS[self.type]:
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if getattr(self, f.name) != default:
                raise ConfigError(
                    f"{path}.{f.name}: not used by {self.type} tasks "
                    f"(it reads {', '.join(TASK_FIELDS[self.type])})"
                )
        {"mlm": self._validate_mlm, "retrieval": self._validate_retrieval}.get(
            self.type, self._validate_classification
        )(path)

    def _validate_mlm(self, path: str) -> None:
        _check_files(self.files, f"{path}.files", allow_list=True)
        if not self.files:
            raise ConfigError(f"{path}.files: an mlm task needs at least one language")

    def _validate_retrieval(self, path: str) -> None:
        _check_files(self.files, f"{path}.files", allow_list=False)
        if bool(self.files) == bool(self.pairs):
            raise ConfigError(
                f"{path}: a retrieval task needs either files (all languages aligned) or pairs, not both"
            )
        if self.files and len(self.files) < 2:
            raise ConfigError(f"{path}.files: needs at least 2 languages, got {list(self.files)}")
        for i, pair in enumerate(self.pairs):
            _check_files(pair, f"{path}.pairs[{i}]", allow_list=False)
            if len(pair) != 2:
                raise ConfigError(f"{path}.pairs[{i}]: must name exactly 2 languages, got {list(pair)}")
            if any(set(pair) == set(other) for other in self.pairs[:i]):
                raise ConfigError(f"{path}.pairs[{i}]: languages {sorted(pair)} are paired earlier too")
        if not all(isinstance(v, str) and v for v in self.scripts.values()):
            raise ConfigError(f"{path}.scripts: must map languages to script names, got {self.scripts!r}")

    def _validate_classification(self, path: str) -> None:
        if not self.train_lang:
            raise ConfigError(f"{path}.train_lang: a classification task needs the training language")
        if not self.train:
            raise ConfigError(f"{path}.train: a classification task needs a labeled training file")
        _check_files(self.test, f"{path}.test", allow_list=False)
        if not self.test:
            raise ConfigError(f"{path}.test: a classification task needs at least one test language")
        if not all(isinstance(v, str) and v for v in self.labels):
            raise ConfigError(f"{path}.labels: must be a list of non-empty strings, got {self.labels!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"{path}.labels: has duplicates: {self.labels}")
        if len(self.labels) == 1:
            raise ConfigError(f"{path}.labels: needs at least 2 labels, got {self.labels}")

    def file_fields(self) -> list[tuple[str, str]]:
        """(field path below the task, file) for every file the task reads, in reading order."""
        out: list[tuple[str, str]] = [("scripts_file", self.scripts_file)] if self.scripts_file else []
        for lang, files in self.files.items():
            for f in [files] if isinstance(files, str) else files:
                out.append((f"files.{lang}", f))
        for i, pair in enumerate(self.pairs):
            out += [(f"pairs[{i}].{lang}", f) for lang, f in pair.items()]
        if self.train:
            out.append(("train", self.train))
        out += [(f"test.{lang}", f) for lang, f in self.test.items()]
        return out


def _check_files(files: object, path: str, allow_list: bool) -> None:
    if not isinstance(files, dict):
        raise ConfigError(f"{path}: must map languages to files, got {files!r}")
    for lang, value in files.items():
        ok = isinstance(value, str) and value
        if allow_list and isinstance(value, list):
            ok = bool(value) and all(isinstance(f, str) and f for f in value)
        if not isinstance(lang, str) or not lang or not ok:
            kind = "a path or a non-empty list of paths" if allow_list else "one path"
            raise ConfigError(f"{path}.{lang}: must be {kind}, got {value!r}")


@dataclass
class EvalConfig:
    """What `megameta evaluate` measures and how. Paths are relative to the corpus dir."""

    #: Run the ``mlm`` tasks (by default: the held-out MLM loss / perplexity).
    mlm: bool = True
    #: Run the ``retrieval`` tasks (by default: cross-lingual UDHR article retrieval).
    retrieval: bool = True
    #: Run the ``classification`` tasks (by default: zero-shot cross-lingual topic classification).
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

    #: The tasks to run, in order (see `TaskConfig` and docs/evaluation.md). Empty: the demo's three
    #: tasks, built from the fields above (``mlm_files``, ``retrieval_langs``, ``classify_*``). The
    #: switches ``mlm``, ``retrieval`` and ``classify`` turn tasks of that type on or off either way.
    tasks: list[TaskConfig] = field(default_factory=list)

    def task_list(self) -> list[tuple[str, TaskConfig]]:
        """(config path, task) for every task that runs, in order: ``tasks``, or the demo defaults.

        The path prefixes error messages about the task's files: ``evaluate.tasks[1]`` for a listed
        task; ``evaluate`` for a default one, whose files come from the flat fields.
        """
        if self.tasks:
            listed = [(f"evaluate.tasks[{i}]", t) for i, t in enumerate(self.tasks)]
        else:
            listed = [("evaluate", t) for t in self.default_tasks()]
        return [(p, t) for p, t in listed if getattr(self, TYPE_SWITCH[t.type])]

    def default_tasks(self) -> list[TaskConfig]:
        """The demo's three tasks from the flat fields: held-out MLM loss, UDHR article retrieval,
        topic classification. Named as `DEFAULT_TASKS`, so their metric keys are the historical ones."""
        return [
            TaskConfig(name="mlm", type="mlm", files=dict(self.mlm_files)),
            TaskConfig(
                name="retrieval",
                type="retrieval",
                files={code: udhr_file("heldout", code) for code in self.retrieval_langs},
                scripts_file=UDHR_LANGUAGES_FILE,
            ),
            TaskConfig(
                name="classify",
                type="classification",
                train_lang=self.classify_train_lang,
                train=wiki_file(self.classify_train_lang, "train"),
                test={lang: wiki_file(lang, "test") for lang in self.classify_test_langs},
                labels=list(CANONICAL_LABELS),
            ),
        ]

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
        if self.mlm and not self.tasks and not self.mlm_files:
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
        if self.retrieval and not self.tasks and len(self.retrieval_langs) < 2:
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
        _check_type(self, "tasks", list, path)
        names: set[str] = set()
        for i, task in enumerate(self.tasks):
            if not isinstance(task, TaskConfig):
                raise ConfigError(f"{path}.tasks[{i}]: must be a task mapping, got {task!r}")
            task.validate(f"{path}.tasks[{i}]")
            if task.name in names:
                raise ConfigError(f"{path}.tasks[{i}].name: {task.name!r} is used by an earlier task")
            names.add(task.name)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(cfg: object, name: str, kind: type, path: str) -> None:
    value = getattr(cfg, name)
    if kind is int:
        ok = _is_int(value)
    elif kind is float:  # YAML writes 1 for 1.0; an int is an acceptable float
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{path}.{name}: must be {kind.__name__}, got {type(value).__name__} {value!r}")


def _check_str_list(cfg: object, name: str, path: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}.{name}: must be a list of non-empty strings, got {value!r}")
