"""Evaluation suite: pure metrics on known answers, config checks, one end-to-end run on a tiny model."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from megameta.errors import ConfigError, InputError
from megameta.evaluate import (
    EvalConfig,
    accuracy,
    compare_reports,
    format_key_metrics,
    key_metrics,
    majority_baseline,
    mean_std,
    retrieval_accuracy,
    run_evaluation,
    split_pairs_by_script,
)
from megameta.evaluate.classify import balanced_sample, fit_probe
from megameta.evaluate.common import EvalRun
from megameta.evaluate.mlm import eval_mask, pack_sequences
from megameta.evaluate.retrieval import summarize_matrix


def small_config(**overrides) -> EvalConfig:
    cfg = EvalConfig(
        mlm_files={
            "en": ["wiki/en/test.jsonl"],
            "fr": ["wiki/fr/test.jsonl"],
            "ru": ["udhr/heldout/rus.jsonl"],
        },
        max_seq_len=32,
        batch_size=8,
        retrieval_langs=["eng", "fra", "rus"],
        classify_seeds=[1, 2],
        classify_max_train=12,
        classify_max_seq_len=32,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def report(tiny_model_dir, tiny_corpus_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report"))
    return out, run_evaluation(tiny_model_dir, tiny_corpus_dir, small_config(), out, progress=False)


def test_tokenizer_has_xlmr_layout(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.mask_token_id == len(tok) - 1
    ids = tok("the people read")["input_ids"]
    assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(ids)) == ids
    assert 3 not in ids  # known words are not <unk>


def test_run_evaluation_writes_all_files(report):
    out, rep = report
    for name in ("report.json", "report.md", "mlm_loss.png", "retrieval.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "report.json")) as f:
        on_disk = json.load(f)
    assert set(on_disk) >= {"model_dir", "config", "timings_s", "results"}
    assert set(on_disk["results"]) == set(on_disk["timings_s"]) == {"mlm", "retrieval", "classify"}
    mlm = rep["results"]["mlm"]
    assert set(mlm) == {"en", "fr", "ru"}
    for r in mlm.values():
        assert r["tokens"] > 0
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
        assert 0 < r["loss"] < 2 * math.log(200)  # a random model is near log(vocab)
    ret = rep["results"]["retrieval"]
    assert ret["same_script_pairs"] == 2 and ret["cross_script_pairs"] == 4
    assert ret["items"]["eng"]["rus"] == 30  # 10 held-out articles, 3 paragraphs each
    assert set(ret["matrix"]["eng"]) == {"fra", "rus"} and ret["chance"] == pytest.approx(1 / 30)
    cls = rep["results"]["classify"]
    assert set(cls["langs"]) == {"en", "fr", "es"}
    for r in cls["langs"].values():
        assert len(r["accuracy_per_seed"]) == 2 and 0 <= r["accuracy_mean"] <= 1
    md = open(os.path.join(out, "report.md")).read()
    assert "cross-script pairs" in md and "| fr (zero-shot) |" in md


def test_mlm_is_deterministic_and_switches_off(tiny_model_dir, tiny_corpus_dir, tmp_path, report):
    cfg = small_config(retrieval=False, classify=False)
    rep = run_evaluation(tiny_model_dir, tiny_corpus_dir, cfg, str(tmp_path), progress=False)
    assert set(rep["results"]) == {"mlm"}
    assert rep["results"]["mlm"]["en"] == report[1]["results"]["mlm"]["en"]
    assert not os.path.exists(tmp_path / "retrieval.png")


def test_eval_mask_never_touches_special_and_is_seeded():
    ids = torch.tensor([[0, 10, 11, 12, 13, 14, 15, 16, 17, 2], [0, 20, 21, 22, 2, 1, 1, 1, 1, 1]])
    maskable = (ids > 3) & (ids != 99)
    masked, labels = eval_mask(ids, maskable, 0.25, 99, seed=7)
    sel = labels != -100
    assert not sel[~maskable].any()
    assert sel.sum(1).tolist() == [2, 1]  # round(0.25 * 8) and max(1, round(0.25 * 3))
    assert (masked[sel] == 99).all() and (labels[sel] == ids[sel]).all()
    assert torch.equal(eval_mask(ids, maskable, 0.25, 99, seed=7)[0], masked)


def test_fit_length_caps_at_the_roberta_position_offset():
    from types import SimpleNamespace

    from megameta.evaluate.common import fit_length
    from megameta.model.config import ModelConfig, positions_usable

    assert positions_usable(514, 1) == 512 == ModelConfig().max_seq_len  # XLM-R base
    xlmr = SimpleNamespace(max_position_embeddings=514, pad_token_id=1)
    assert fit_length(xlmr, 1024) == 512 and fit_length(xlmr, 128) == 128
    assert fit_length(SimpleNamespace(max_position_embeddings=40, pad_token_id=None), 64) == 39
    assert fit_length(SimpleNamespace(), 64) == 64  # no position table: no cap


def test_pack_sequences_keeps_every_token():
    seqs = pack_sequences([[5, 6, 7], [8, 9]], max_len=4, bos=0, eos=2)
    assert all(len(s) <= 4 and s[0] == 0 and s[-1] == 2 for s in seqs)
    assert [t for s in seqs for t in s[1:-1]] == [5, 6, 7, 2, 8, 9, 2]


def test_retrieval_accuracy_known_answers():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 16))
    assert retrieval_accuracy(emb, emb) == 1.0
    assert retrieval_accuracy(emb, 3.0 * emb + 0.01 * rng.normal(size=emb.shape)) == 1.0
    rand = [retrieval_accuracy(rng.normal(size=(50, 16)), rng.normal(size=(50, 16))) for _ in range(40)]
    assert abs(np.mean(rand) - 1 / 50) < 0.02
    assert retrieval_accuracy(emb, emb[::-1]) == 0.0


def test_script_split_counts_pairs():
    same, cross = split_pairs_by_script(
        {"eng": "Latn", "fra": "Latn", "spa": "Latn", "rus": "Cyrl", "ell": "Grek"}
    )
    assert len(same) == 6 and len(cross) == 14  # 3*2 ordered Latin pairs; 5*4 - 6 others
    assert ("eng", "rus") in cross and ("rus", "eng") in cross and ("fra", "spa") in same
    matrix = {"a": {"b": 1.0, "c": 0.0}, "b": {"a": 0.5, "c": 0.0}, "c": {"a": 0.0, "b": 0.5}}
    s = summarize_matrix(matrix, {"a": "Latn", "b": "Latn", "c": "Cyrl"})
    assert s["same_script_mean"] == 0.75 and s["cross_script_mean"] == 0.125
    assert (s["same_script_pairs"], s["cross_script_pairs"]) == (2, 4)


def test_classification_metrics_known_answers():
    assert accuracy([0, 1, 2, 3], [0, 1, 0, 0]) == 0.5
    assert majority_baseline([2, 2, 1, 0], [2, 1, 2, 2]) == 0.75
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([0.2, 0.4])
    assert m == pytest.approx(0.3) and s == pytest.approx(math.sqrt(0.02))
    picked = balanced_sample([0] * 10 + [1] * 2 + [2] * 3, 6, seed=1)
    assert sorted([0 if i < 10 else 1 if i < 12 else 2 for i in picked]) == [0, 0, 1, 1, 2, 2]
    x = torch.tensor([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
    assert fit_probe(x, torch.tensor([0, 0, 1, 1]), 2, l2=1e-3)(x).tolist() == [0, 0, 1, 1]


def _fake_report(en: float, fr: float, cross: float, loss: float) -> dict:
    langs = {
        lang: {
            "accuracy_mean": a,
            "accuracy_std": 0.0,
            "accuracy_per_seed": [a],
            "majority_baseline": 0.2,
            "n_test": 9,
        }
        for lang, a in (("en", en), ("fr", fr))
    }
    return {
        "results": {
            "classify": {"train_lang": "en", "langs": langs},
            "retrieval": {"mean": cross, "same_script_mean": None, "cross_script_mean": cross},
            "mlm": {"en": {"loss": loss, "perplexity": math.exp(loss)}},
        }
    }


def test_key_metrics_names_and_the_key_numbers_line():
    report = _fake_report(0.6012, 0.2731, 0.1034, math.log(661.2))
    report["results"]["retrieval"].update(mean=0.1134, same_script_mean=0.1705)
    metrics = key_metrics(report)
    assert list(metrics) == [
        "ppl[en]",
        "mlm_loss[en]",
        "retrieval",
        "same-script",
        "cross-script",
        "acc[en]",
        "acc[fr]",
    ]
    assert metrics["ppl[en]"] == pytest.approx(661.2) and metrics["mlm_loss[en]"] == pytest.approx(
        math.log(661.2)
    )
    assert (metrics["retrieval"], metrics["same-script"], metrics["acc[fr]"]) == (0.1134, 0.1705, 0.2731)
    line = "ppl[en]=661 retrieval=0.113 same-script=0.171 cross-script=0.103 acc[en]=0.601 acc[fr]=0.273"
    assert format_key_metrics(metrics) == line  # the pipeline's "key numbers" format, as in the README
    report["results"]["retrieval"]["same_script_mean"] = None  # no same-script pair: no entry
    assert "same-script" not in key_metrics(report)
    assert key_metrics({"results": {}}) == {} and format_key_metrics({}) == "(see report)"


def test_compare_reports_pairs_seeds_and_names_a_winner_only_outside_the_interval(tmp_path):
    # Three seeds: fr clearly better for meta in every seed, cross-script overlapping, en identical.
    meta = [
        _fake_report(0.8, 0.60, 0.50, 3.0),
        _fake_report(0.8, 0.62, 0.52, 3.1),
        _fake_report(0.8, 0.61, 0.49, 3.2),
    ]
    base = [
        _fake_report(0.8, 0.40, 0.51, 3.0),
        _fake_report(0.8, 0.41, 0.50, 3.1),
        _fake_report(0.8, 0.42, 0.50, 3.2),
    ]
    cmp = compare_reports({"baseline": base, "meta": meta}, str(tmp_path))
    assert cmp["groups"] == ["meta", "baseline"] and cmp["n_seeds"] == 3
    fr = cmp["metrics"]["acc[fr]"]
    # paired differences 0.20, 0.21, 0.19: sd 0.01, t(0.975, 2) = 4.303 -> half-width 0.0248
    assert fr["diffs"] == pytest.approx([0.2, 0.21, 0.19]) and fr["diff"] == pytest.approx(0.2)
    assert fr["diff_interval"] == pytest.approx([0.2 - 0.02484, 0.2 + 0.02484], abs=1e-4)
    assert fr["verdict"] == "meta better (95% interval excludes 0)"
    assert cmp["metrics"]["cross-script"]["verdict"] == "not conclusive (95% interval includes 0)"
    assert cmp["metrics"]["acc[en]"]["verdict"] == "identical"
    assert cmp["metrics"]["mlm_loss[en]"]["verdict"] == "identical"  # paired: seed-to-seed spread cancels
    assert "same-script" not in cmp["metrics"]  # absent (None) in the reports
    assert "ppl[en]" not in cmp["metrics"] and not cmp["metrics"]["mlm_loss[en]"]["higher_is_better"]
    assert cmp["summary"]["meta_better"] == ["acc[fr]"]
    md = (tmp_path / "comparison.md").read_text()
    assert (
        "| topic accuracy fr (zero-shot transfer) | 0.610 ± 0.010 | 0.410 ± 0.010 | +0.200 | [+0.175, +0.225] |"
        in md
    )
    assert (tmp_path / "comparison.png").stat().st_size > 0
    single = compare_reports({"meta": meta[:1], "baseline": base[:1]}, str(tmp_path / "one"))
    assert single["summary"]["meta_better"] == [] and single["metrics"]["acc[fr]"]["diff_interval"] is None
    assert "nothing here is conclusive" in (tmp_path / "one" / "comparison.md").read_text()
    with pytest.raises(InputError, match="pairs the arms by seed"):
        compare_reports({"meta": meta, "baseline": base[:2]}, str(tmp_path / "bad"))


@pytest.mark.parametrize(
    ("a", "b", "higher_better", "expected"),
    [
        ([0.6, 0.7, 0.65, 0.62], [0.5, 0.58, 0.56, 0.5], True, "meta better"),  # clear win
        ([0.6, 0.7, 0.65, 0.62], [0.5, 0.58, 0.56, 0.5], False, "baseline better"),  # same numbers, a loss
        ([3.1, 3.0, 3.2], [3.3, 3.25, 3.4], True, "baseline better"),  # clear loss
        ([0.6, 0.5, 0.55], [0.5, 0.6, 0.56], True, "not conclusive"),  # overlap: differences change sign
        ([0.60, 0.61], [0.50, 0.40], True, "not conclusive"),  # all positive, but 2 seeds spread too much
        ([0.6], [0.5], True, "one seed"),
    ],
)
def test_verdict_on_known_answers(a, b, higher_better, expected):
    from megameta.evaluate.compare import paired_interval, verdict

    interval = paired_interval(a, b)
    assert verdict(interval, higher_better, ("meta", "baseline")).startswith(expected)
    if interval is not None:
        mean, low, high = interval
        assert low < mean < high and mean == pytest.approx(np.mean(np.subtract(a, b)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mask_prob", 1.5, "evaluate.mask_prob: must be in (0, 1), got 1.5"),
        ("batch_size", 0, "evaluate.batch_size: must be >= 1"),
        ("classify_mode", "svm", "evaluate.classify_mode: must be one of"),
        ("retrieval_langs", ["eng"], "evaluate.retrieval_langs: needs at least 2"),
        ("mlm_files", {"en": []}, "evaluate.mlm_files.en: must be a non-empty list"),
        ("classify_seeds", [1, "2"], "evaluate.classify_seeds:"),
        ("mlm", "yes", "evaluate.mlm: must be bool"),
    ],
)
def test_bad_config_names_the_field(field, value, message):
    cfg = EvalConfig()
    cfg.validate()
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=None) as err:
        cfg.validate()
    assert str(err.value).startswith(message)
    with pytest.raises(ConfigError) as err:
        EvalConfig(mask_prob=0.0).validate("phases[1].evaluate")
    assert str(err.value).startswith("phases[1].evaluate.mask_prob:")


def test_missing_inputs_raise_input_error(tiny_model_dir, tiny_corpus_dir, tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(InputError, match="no_such_model"):
        run_evaluation(missing, tiny_corpus_dir, small_config(), str(tmp_path / "out"), progress=False)
    cfg = small_config(mlm=False, classify=False, retrieval_langs=["eng", "xyz"])
    with pytest.raises(InputError, match=r"heldout.xyz\.jsonl"):
        run_evaluation(tiny_model_dir, tiny_corpus_dir, cfg, str(tmp_path / "out"), progress=False)
    cfg = small_config(mlm=False, classify=False, retrieval_layer=3)  # 2 layers: hidden states 0..2
    with pytest.raises(ConfigError, match="evaluate.retrieval_layer: 3 is out of range"):
        run_evaluation(tiny_model_dir, tiny_corpus_dir, cfg, str(tmp_path / "out"), progress=False)


def test_finetune_mode_runs(tiny_model_dir, tiny_corpus_dir):
    from megameta.evaluate import evaluate_classification

    cfg = small_config(
        classify_mode="finetune", classify_epochs=1, classify_seeds=[3], classify_test_langs=["fr"]
    )
    res = evaluate_classification(EvalRun(tiny_model_dir, tiny_corpus_dir, cfg, torch.device("cpu"), False))
    assert res["mode"] == "finetune" and res["n_train"] == {"3": 12}
    assert 0 <= res["langs"]["fr"]["accuracy_mean"] <= 1 and res["langs"]["fr"]["n_test"] == 11
