"""Evaluation tasks from the config: readers on files in the real layouts, config checks, the demo
defaults through the generic path, and user tasks (XNLI-, PAWS-X-, Tatoeba-style) end to end."""

from __future__ import annotations

import math
import random
import re
import shutil
from pathlib import Path

import pytest
import yaml

from megameta.configtools import from_dict
from megameta.errors import ConfigError, InputError
from megameta.evaluate import CANONICAL_LABELS, EvalConfig, format_key_metrics, key_metrics, run_evaluation
from megameta.evaluate.compare import _describe, compare_reports
from megameta.evaluate.hook import eval_suite_scalars
from megameta.evaluate.readers import read_aligned, read_labeled, select_language

# Header rows exactly as the distributions ship them (tab-separated).
XNLI_HEADER = (
    "language gold_label sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse "
    "sentence1 sentence2 promptID pairID genre label1 label2 label3 label4 label5 sentence1_tokenized "
    "sentence2_tokenized match"
).split()
MULTINLI_HEADER = (
    "gold_label sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse sentence1 "
    "sentence2 promptID pairID genre label1 label2 label3 label4 label5"
).split()
XNLI_MT_HEADER = ["premise", "hypo", "label"]
PAWSX_HEADER = ["id", "sentence1", "sentence2", "label"]
NLI_LABELS = ("entailment", "neutral", "contradiction")
#: Word-by-word translations, from the words the tiny model's tokenizer was trained on (conftest.py).
WORDS = {
    "en": "the people read books about history art city river machine number god home music war".split(),
    "fr": "les gens lisent des livres sur histoire art ville fleuve machine nombre dieu maison musique".split(),
    "es": "la gente lee libros sobre historia arte ciudad río máquina número dios casa música comida".split(),
    "ru": "люди читают книги об истории искусство город река машина число бог дом музыка еда".split(),
}


def write_tsv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(row.get(c, "") for c in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sentences(lang: str, n: int, seed: int) -> list[str]:
    """`n` sentences of `lang`; the same seed gives word-by-word translations in every language."""
    rng = random.Random(seed)
    return [" ".join(WORDS[lang][rng.randrange(14)] for _ in range(6)) for _ in range(n)]


def xnli_rows(lang: str, n: int, seed: int) -> list[dict[str, str]]:
    s1, s2 = sentences(lang, n, seed), sentences(lang, n, seed + 1)
    return [
        {"language": lang, "gold_label": NLI_LABELS[i % 3], "sentence1": a, "sentence2": b, "pairID": str(i)}
        for i, (a, b) in enumerate(zip(s1, s2, strict=True))
    ]


# --- readers ------------------------------------------------------------------------------------


def test_xnli_tsv_picks_rows_by_language_and_skips_no_consensus(tmp_path):
    rows = xnli_rows("en", 4, 0) + xnli_rows("fr", 5, 1)
    rows[1]["gold_label"] = "-"  # no annotator consensus
    rows[5]["sentence1"] = 'il dit "bonjour'  # a bare quote: no CSV quoting in these files
    path = write_tsv(tmp_path / "XNLI-1.0" / "xnli.test.tsv", XNLI_HEADER, rows)
    read = read_labeled(path)
    en, fr = select_language(read, "en", path), select_language(read, "fr", path)
    assert [r.text for r in en] == [rows[i]["sentence1"] for i in (0, 2, 3)]
    assert [r.pair for r in fr] == [r["sentence2"] for r in rows[4:]]
    assert fr[1].text == 'il dit "bonjour' and [r.label for r in fr] == [r["gold_label"] for r in rows[4:]]
    assert fr[0].line == 6  # header is line 1
    with pytest.raises(InputError, match=r"xnli.test.tsv: no rows with language 'de'"):
        select_language(read, "de", path)
    with open(path, "a", encoding="utf-8") as f:
        f.write("fr\tneutral\tonly three fields\n")
    with pytest.raises(
        InputError, match=r"xnli\.test\.tsv:11: 3 tab-separated fields, the XNLI-1.0 header has 19"
    ):
        read_labeled(path)


def test_multinli_and_xnli_mt_training_files(tmp_path):
    rows = [
        {"gold_label": "neutral", "sentence1": "a b", "sentence2": "c d", "genre": "slate"},
        {"gold_label": "-", "sentence1": "e f", "sentence2": "g h"},
        {"gold_label": "contradiction", "sentence1": "i j", "sentence2": "k l"},
    ]
    mnli = read_labeled(
        write_tsv(tmp_path / "multinli_1.0" / "multinli_1.0_train.txt", MULTINLI_HEADER, rows)
    )
    assert [(r.text, r.pair, r.label, r.lang) for r in mnli] == [
        ("a b", "c d", "neutral", None),
        ("i j", "k l", "contradiction", None),
    ]
    mt_rows = [
        {"premise": "les gens", "hypo": "la ville", "label": "contradictory"},
        {"premise": "un livre", "hypo": "une maison", "label": "entailment"},
    ]
    path = write_tsv(tmp_path / "XNLI-MT-1.0" / "multinli" / "multinli.train.fr.tsv", XNLI_MT_HEADER, mt_rows)
    mt = read_labeled(path)
    assert [r.label for r in mt] == ["contradiction", "entailment"]  # XNLI's spelling
    assert select_language(mt, "fr", path) == mt  # no language column: every row
    path.write_text("premise\thypo\tlabel\nles gens\t\tneutral\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"multinli\.train\.fr\.tsv:2: empty second sentence"):
        read_labeled(path)


def test_pawsx_tsv_and_bad_rows(tmp_path):
    rows = [
        {"id": "1", "sentence1": "Der Fluss", "sentence2": "Die Stadt", "label": "0"},
        {"id": "2", "sentence1": "Das Haus", "sentence2": "Das Haus", "label": "1"},
    ]
    path = write_tsv(tmp_path / "x-final" / "de" / "test_2k.tsv", PAWSX_HEADER, rows)
    assert [(r.text, r.pair, r.label) for r in read_labeled(path)] == [
        ("Der Fluss", "Die Stadt", "0"),
        ("Das Haus", "Das Haus", "1"),
    ]
    with open(path, "a", encoding="utf-8") as f:
        f.write("3\tDer Gott\tDie Musik\t\n")
    with pytest.raises(InputError, match=r"test_2k\.tsv:4: empty label"):
        read_labeled(path)
    path.write_text("idx\tquestion\tanswer\n1\ta\tb\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"test_2k\.tsv:1: header .* is no known layout"):
        read_labeled(path)
    with pytest.raises(InputError, match="file not found"):
        read_labeled(tmp_path / "x-final" / "de" / "dev_2k.tsv")


def test_jsonl_labeled_and_aligned(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"text": "a", "label": "x"}\n\n{"text": "b", "label": null}\n{"text": "c", "text_pair": "d", "label": 1}\n',
        encoding="utf-8",
    )
    assert [(r.text, r.pair, r.label, r.line) for r in read_labeled(path)] == [
        ("a", None, "x", 1),
        ("c", "d", "1", 4),
    ]
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"train\.jsonl:2: not valid JSON"):
        read_labeled(path)
    udhr = tmp_path / "eng.jsonl"
    udhr.write_text(
        '{"article": 22, "text": "x"}\n{"article": 21, "text": "y"}\n{"article": 22, "text": "z"}\n',
        encoding="utf-8",
    )
    assert read_aligned(udhr) == {21: "y", 22: "x\nz"}
    udhr.write_text('{"article": "22", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"eng\.jsonl:1: needs an int 'article'"):
        read_aligned(udhr)


def test_paragraph_items_match_only_articles_split_alike(tmp_path):
    """Records listing their paragraphs give one item per paragraph; the key carries the article's
    paragraph count, so a translation that splits an article differently shares none of its items."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(
        '{"article": 21, "text": "p q r", "paragraphs": ["p", "q", "r"]}\n'
        '{"article": 22, "text": "s", "paragraphs": ["s"]}\n',
        encoding="utf-8",
    )
    b.write_text(
        '{"article": 21, "text": "P Q", "paragraphs": ["P", "Q"]}\n'
        '{"article": 22, "text": "S", "paragraphs": ["S"]}\n',
        encoding="utf-8",
    )
    items_a, items_b = read_aligned(a), read_aligned(b)
    assert items_a == {(21, 3, 0): "p", (21, 3, 1): "q", (21, 3, 2): "r", (22, 1, 0): "s"}
    assert set(items_a) & set(items_b) == {(22, 1, 0)}
    for body, message in [
        ('{"article": 21, "text": "p", "paragraphs": ["p"]}\n{"article": 22, "text": "s"}\n',
         r"a\.jsonl:2: no 'paragraphs' list"),
        ('{"article": 21, "text": "p", "paragraphs": []}\n', r"a\.jsonl:1: 'paragraphs' must be non-empty"),
        ('{"article": 21, "text": "p", "paragraphs": "p"}\n', r"a\.jsonl:1: needs an int 'article' and a 'paragraphs' list"),
        ('{"article": 21, "paragraphs": ["p"]}\n{"article": 21, "paragraphs": ["q"]}\n',
         r"a\.jsonl:2: article 21 is listed twice"),
    ]:  # fmt: skip
        a.write_text(body, encoding="utf-8")
        with pytest.raises(InputError, match=message):
            read_aligned(a)


def test_tatoeba_files_align_by_line(tmp_path):
    fra = tmp_path / "tatoeba" / "tatoeba.fra-eng.fra"
    fra.parent.mkdir()
    fra.write_text("les gens lisent\nla ville\n\nun fleuve\n", encoding="utf-8")
    assert read_aligned(fra) == {0: "les gens lisent", 1: "la ville", 2: "", 3: "un fleuve"}


# --- config -------------------------------------------------------------------------------------

XNLI_TASK = {
    "name": "xnli",
    "type": "classification",
    "train_lang": "en",
    "train": "XNLI-MT-1.0/multinli/multinli.train.en.tsv",
    "test": {"en": "XNLI-1.0/xnli.test.tsv", "fr": "XNLI-1.0/xnli.test.tsv"},
}
TATOEBA_TASK = {
    "name": "tatoeba",
    "type": "retrieval",
    "pairs": [
        {"fra": "tatoeba/tatoeba.fra-eng.fra", "eng": "tatoeba/tatoeba.fra-eng.eng"},
        {"rus": "tatoeba/tatoeba.rus-eng.rus", "eng": "tatoeba/tatoeba.rus-eng.eng"},
    ],
    "scripts": {"fra": "Latn", "eng": "Latn", "rus": "Cyrl"},
}


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({**XNLI_TASK, "labels": ["entailment"]}, "evaluate.tasks[1].labels: needs at least 2 labels"),
        ({**XNLI_TASK, "train": ""}, "evaluate.tasks[1].train: a classification task needs"),
        ({**XNLI_TASK, "test": {"fr": 3}}, "evaluate.tasks[1].test.fr: expected a string"),
        ({**XNLI_TASK, "files": {"en": "a.txt"}}, "evaluate.tasks[1].files: not used by classification tasks"),
        ({**XNLI_TASK, "tset": {}}, "evaluate.tasks[1].tset: unknown key (did you mean 'test'?)"),
        ({**XNLI_TASK, "type": "nli"}, "evaluate.tasks[1].type: must be one of"),
        ({**XNLI_TASK, "name": "x nli"}, "evaluate.tasks[1].name: must be letters"),
        ({**XNLI_TASK, "name": "tatoeba"}, "evaluate.tasks[1].name: 'tatoeba' is used by an earlier task"),
        ({"type": "mlm", "files": {"en": "a"}}, "evaluate.tasks[1].name: required key is missing"),
        ({"name": "m", "type": "mlm"}, "evaluate.tasks[1].files: an mlm task needs at least one language"),
        ({"name": "m", "type": "mlm", "files": {"en": []}}, "evaluate.tasks[1].files.en: must be a path"),
        ({**TATOEBA_TASK, "name": "t2", "files": {"a": "x", "b": "y"}}, "evaluate.tasks[1]: a retrieval task needs either"),
        ({"name": "t", "type": "retrieval", "files": {"a": "x"}}, "evaluate.tasks[1].files: needs at least 2 languages"),
        ({"name": "t", "type": "retrieval", "pairs": [{"a": "x", "b": "y", "c": "z"}]}, "evaluate.tasks[1].pairs[0]: must name exactly 2"),
        ({"name": "t", "type": "retrieval", "pairs": [{"a": "x", "b": "y"}, {"b": "u", "a": "v"}]}, "evaluate.tasks[1].pairs[1]: languages ['a', 'b'] are paired earlier"),
    ],
)  # fmt: skip
def test_bad_task_config_names_the_field(task, message):
    with pytest.raises(ConfigError) as err:
        from_dict(EvalConfig, {"tasks": [TATOEBA_TASK, task]}, "evaluate")
    assert str(err.value).startswith(message), str(err.value)


def test_missing_task_file_names_the_field_before_the_model_loads(tiny_model_dir, tmp_path):
    write_tsv(
        tmp_path / XNLI_TASK["train"], XNLI_MT_HEADER, [{"premise": "a", "hypo": "b", "label": "neutral"}]
    )
    write_tsv(tmp_path / "XNLI-1.0" / "xnli.test.tsv", XNLI_HEADER, xnli_rows("en", 3, 0))
    task = {**XNLI_TASK, "test": {"en": "XNLI-1.0/xnli.test.tsv", "fr": "XNLI-1.0/xnli.dev.tsv"}}
    cfg = from_dict(
        EvalConfig, {"tasks": [{"name": "m", "type": "mlm", "files": {"en": "a.txt"}}, task]}, "evaluate"
    )
    cfg.mlm = False  # the switches turn task types off: the missing a.txt is not looked for
    with pytest.raises(ConfigError) as err:
        run_evaluation(tiny_model_dir, str(tmp_path), cfg, str(tmp_path / "out"), progress=False)
    assert (
        str(err.value)
        == f"evaluate.tasks[1].test.fr: file not found: {tmp_path / 'XNLI-1.0' / 'xnli.dev.tsv'}"
    )
    assert not (tmp_path / "out").exists()
    # The default tasks' files come from the flat fields, which the message names.
    with pytest.raises(
        ConfigError, match=r"^evaluate\.mlm_files\.en: file not found: .*wiki/en/test\.jsonl$"
    ):
        run_evaluation(tiny_model_dir, str(tmp_path), EvalConfig(), str(tmp_path / "out"), progress=False)
    cfg = EvalConfig(mlm=False, retrieval_langs=["eng", "xyz"])
    with pytest.raises(
        ConfigError, match=r"^evaluate\.retrieval_langs: file not found: .*udhr/languages\.json$"
    ):
        run_evaluation(tiny_model_dir, str(tmp_path), cfg, str(tmp_path / "out"), progress=False)


def test_the_docs_examples_load():
    text = (Path(__file__).parents[2] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    loaded = [from_dict(EvalConfig, yaml.safe_load(b)["evaluate"], "evaluate") for b in blocks]
    assert [t.name for t in loaded[0].tasks] == ["xnli", "pawsx", "tatoeba", "heldout"]
    assert loaded[1].tasks[0].labels == CANONICAL_LABELS  # the demo's labels, in index order


# --- the demo defaults through the generic path ------------------------------------------------

SMALL = {
    "max_seq_len": 32,
    "batch_size": 8,
    "classify_seeds": [1, 2],
    "classify_max_train": 12,
    "classify_max_seq_len": 32,
}
MLM_FILES = {"en": ["wiki/en/test.jsonl"], "fr": ["wiki/fr/test.jsonl"], "ru": ["udhr/heldout/rus.jsonl"]}
UDHR_CODES = ["eng", "fra", "rus"]


def demo_tasks(names: tuple[str, str, str]) -> list[dict]:
    """The demo's three tasks written out as ``evaluate.tasks`` entries, under the given names."""
    return [
        {"name": names[0], "type": "mlm", "files": MLM_FILES},
        {
            "name": names[1],
            "type": "retrieval",
            "files": {code: f"udhr/heldout/{code}.jsonl" for code in UDHR_CODES},
            "scripts_file": "udhr/languages.json",
        },
        {
            "name": names[2],
            "type": "classification",
            "train_lang": "en",
            "train": "wiki/en/train.jsonl",
            "test": {lang: f"wiki/{lang}/test.jsonl" for lang in ("en", "fr", "es")},
            "labels": list(CANONICAL_LABELS),
        },
    ]


def test_explicit_demo_tasks_give_the_default_numbers(tiny_model_dir, tiny_corpus_dir, tmp_path):
    def run(extra: dict, out: str) -> dict:
        cfg = from_dict(EvalConfig, {**SMALL, **extra}, "evaluate")
        return run_evaluation(tiny_model_dir, tiny_corpus_dir, cfg, str(tmp_path / out), progress=False)

    default = run({"mlm_files": MLM_FILES, "retrieval_langs": UDHR_CODES}, "default")
    same = run({"tasks": demo_tasks(("mlm", "retrieval", "classify"))}, "same")
    renamed = run({"tasks": demo_tasks(("heldout", "udhr", "topics"))}, "renamed")
    assert default["tasks"] == {"mlm": "mlm", "retrieval": "retrieval", "classify": "classification"}
    assert same["results"] == default["results"]
    assert key_metrics(same) == key_metrics(default)
    assert list(key_metrics(default))[:2] == ["ppl[en]", "ppl[fr]"] and "acc[fr]" in key_metrics(default)
    # Under other names the numbers are the same, the keys carry the task name.
    assert list(renamed["results"].values()) == list(default["results"].values())
    prefixed = {"ppl": "heldout", "mlm_loss": "heldout", "acc": "topics"}
    expected = {
        f"{prefixed.get(key.partition('[')[0], 'udhr')}:{key}": value
        for key, value in key_metrics(default).items()
    }
    assert key_metrics(renamed) == expected
    assert (tmp_path / "renamed" / "heldout.png").stat().st_size > 0
    assert (tmp_path / "renamed" / "udhr.png").stat().st_size > 0
    md = (tmp_path / "renamed" / "report.md").read_text()
    assert "## topics: classification (train en" in md and "| fr (zero-shot) |" in md


# --- user tasks end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_files(tmp_path_factory) -> Path:
    """XNLI-, PAWS-X- and Tatoeba-style files in their distribution layouts, plus a held-out text."""
    root = tmp_path_factory.mktemp("task_files")
    en_train = xnli_rows("en", 30, 10)
    write_tsv(
        root / XNLI_TASK["train"],
        XNLI_MT_HEADER,
        [{"premise": r["sentence1"], "hypo": r["sentence2"], "label": r["gold_label"]} for r in en_train],
    )
    test = xnli_rows("en", 7, 20) + xnli_rows("fr", 8, 21)
    test[3]["gold_label"] = "-"
    write_tsv(root / "XNLI-1.0" / "xnli.test.tsv", XNLI_HEADER, test)
    for lang, name, n in (("en", "train.tsv", 20), ("es", "test_2k.tsv", 6)):
        rows = [
            {"id": str(i), "sentence1": a, "sentence2": a if i % 2 else b, "label": str(i % 2)}
            for i, (a, b) in enumerate(zip(sentences(lang, n, 30), sentences(lang, n, 31), strict=True))
        ]
        write_tsv(root / "x-final" / lang / name, PAWSX_HEADER, rows)
    (root / "tatoeba").mkdir()
    for xx, lang in (("fra", "fr"), ("rus", "ru")):
        (root / f"tatoeba/tatoeba.{xx}-eng.{xx}").write_text("\n".join(sentences(lang, 9, 40)) + "\n")
        (root / f"tatoeba/tatoeba.{xx}-eng.eng").write_text("\n".join(sentences("en", 9, 40)) + "\n")
    (root / "heldout.en.txt").write_text("\n".join(sentences("en", 5, 50)) + "\n")
    return root


def user_config(**extra) -> EvalConfig:
    tasks = [
        XNLI_TASK,
        {
            "name": "pawsx",
            "type": "classification",
            "train_lang": "en",
            "train": "x-final/en/train.tsv",
            "test": {"es": "x-final/es/test_2k.tsv"},
        },
        TATOEBA_TASK,
        {"name": "heldout", "type": "mlm", "files": {"en": "heldout.en.txt"}},
    ]
    return from_dict(EvalConfig, {**SMALL, "classify_seeds": [1], "tasks": tasks, **extra}, "evaluate")


def test_xnli_pawsx_tatoeba_tasks_end_to_end(tiny_model_dir, task_files, tmp_path):
    out = tmp_path / "report"
    report = run_evaluation(tiny_model_dir, str(task_files), user_config(), str(out), progress=False)
    assert report["tasks"] == {
        "xnli": "classification",
        "pawsx": "classification",
        "tatoeba": "retrieval",
        "heldout": "mlm",
    }
    xnli = report["results"]["xnli"]
    assert xnli["labels"] == ["contradiction", "entailment", "neutral"] and xnli["pair"]
    assert xnli["n_train_available"] == 30 and xnli["n_train"] == {"1": 12}
    assert {lang: r["n_test"] for lang, r in xnli["langs"].items()} == {"en": 6, "fr": 8}  # "-" row left out
    assert report["results"]["pawsx"]["labels"] == ["0", "1"]
    tatoeba = report["results"]["tatoeba"]
    assert tatoeba["mode"] == "pairs" and tatoeba["langs"] == ["fra", "eng", "rus"]
    assert set(tatoeba["matrix"]["eng"]) == {"fra", "rus"} and tatoeba["items"]["fra"]["eng"] == 9
    assert tatoeba["chance"] == pytest.approx(1 / 9)
    assert (tatoeba["same_script_pairs"], tatoeba["cross_script_pairs"]) == (2, 2)
    metrics = key_metrics(report)
    assert list(metrics) == [
        "xnli:acc[en]",
        "xnli:acc[fr]",
        "pawsx:acc[es]",
        "tatoeba:retrieval",
        "tatoeba:same-script",
        "tatoeba:cross-script",
        "heldout:ppl[en]",
        "heldout:mlm_loss[en]",
    ]
    cells = [v for row in tatoeba["matrix"].values() for v in row.values()]
    assert metrics["tatoeba:retrieval"] == pytest.approx(sum(cells) / 4)
    assert metrics["heldout:ppl[en]"] == pytest.approx(math.exp(metrics["heldout:mlm_loss[en]"]))
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if "acc[" in k or "tatoeba:" in k)
    assert "xnli:acc[fr]=" in format_key_metrics(metrics) and "mlm_loss" not in format_key_metrics(metrics)
    assert _describe("xnli:acc[fr]", report) == (True, "xnli accuracy fr (zero-shot transfer)")
    assert _describe("xnli:acc[en]", report) == (True, "xnli accuracy en (in-language)")
    assert _describe("tatoeba:cross-script", report) == (
        True,
        "tatoeba retrieval accuracy, cross-script pairs",
    )
    assert _describe("heldout:mlm_loss[en]", report)[0] is False
    assert eval_suite_scalars(report)["eval/xnli/accuracy_fr"] == metrics["xnli:acc[fr]"]
    md = (out / "report.md").read_text()
    assert "## xnli: classification (train en" in md and "| fra | eng |" in md
    assert (out / "heldout.png").exists() and not (out / "tatoeba.png").exists()  # pairs: no matrix plot
    cmp = compare_reports({"meta": [report], "baseline": [report]}, str(tmp_path / "cmp"))
    assert cmp["metrics"]["xnli:acc[fr]"]["verdict"].startswith("one seed")
    assert cmp["summary"]["not_conclusive"] == [
        "xnli:acc[fr]",
        "pawsx:acc[es]",
        "tatoeba:retrieval",
        "tatoeba:same-script",
        "tatoeba:cross-script",
    ]


def test_user_task_bad_inputs(tiny_model_dir, task_files, tmp_path):
    root = tmp_path / "files"
    shutil.copytree(task_files, root)
    eng = root / "tatoeba" / "tatoeba.rus-eng.eng"
    eng.write_text(eng.read_text() + "one line too many\n")
    with pytest.raises(InputError, match=r"tatoeba\.rus-eng\.rus has 9 lines, .*tatoeba\.rus-eng\.eng 10"):
        run_evaluation(
            tiny_model_dir, str(root), user_config(classify=False), str(tmp_path / "o"), progress=False
        )
    single = root / "single.jsonl"
    single.write_text('{"text": "die Stadt", "label": "0"}\n{"text": "das Haus", "label": "1"}\n')
    cfg = user_config(retrieval=False, mlm=False)
    cfg.tasks[1].test = {"de": str(single)}  # absolute paths are used as given
    with pytest.raises(
        InputError, match=r"single\.jsonl: holds single texts, the training file .*train\.tsv sentence pairs"
    ):
        run_evaluation(tiny_model_dir, str(root), cfg, str(tmp_path / "o"), progress=False)
    test = root / "XNLI-1.0" / "xnli.test.tsv"
    test.write_text(test.read_text().replace("\tneutral\t", "\tmaybe\t", 1))
    with pytest.raises(InputError, match=r"xnli\.test\.tsv:\d+: label 'maybe' is not one of"):
        run_evaluation(
            tiny_model_dir, str(root), user_config(retrieval=False), str(tmp_path / "o"), progress=False
        )


def test_finetune_on_sentence_pairs(tiny_model_dir, task_files):
    import torch

    from megameta.evaluate import evaluate_classification
    from megameta.evaluate.common import EvalRun

    cfg = user_config(classify_mode="finetune", classify_epochs=1, classify_seeds=[3])
    run = EvalRun(tiny_model_dir, str(task_files), cfg, torch.device("cpu"), False)
    res = evaluate_classification(run, cfg.tasks[0])
    assert res["mode"] == "finetune" and res["pair"] and len(res["labels"]) == 3
    assert {lang: r["n_test"] for lang, r in res["langs"].items()} == {"en": 6, "fr": 8}
    assert all(0.0 <= r["accuracy_mean"] <= 1.0 for r in res["langs"].values())
