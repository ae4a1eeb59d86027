"""End to end: the tiny two-phase pipeline under the deepspeed launcher (2 CPU ranks), then checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import megameta, tiny_config, write_config

from megameta import checkpoint as ckpt
from megameta.checkpoint import load_weights, state_dict_digest
from megameta.model import XLMRForMaskedLM
from megameta.pipeline import MEMORIZATION_MARGIN, memorization_gaps

pytestmark = pytest.mark.slow


def test_pipeline_writes_every_artifact(tiny_pipeline):
    run = tiny_pipeline["run"]
    for phase in ("meta", "xlingual"):
        done = tiny_pipeline["done"][phase]
        assert done["step"] == 4
        assert (run / phase / "checkpoints" / done["tag"] / "meta.json").exists()
        assert ckpt.check_integrity(run / phase / "checkpoints" / done["tag"]) is None
        assert (run / phase / "ds_config.json").exists()
    hf = run / "xlingual" / "hf"
    for name in ("config.json", "model.safetensors", "sentencepiece.bpe.model", "megameta_provenance.json"):
        assert (hf / name).exists(), name
    report = json.loads((run / "xlingual" / "eval" / "report.json").read_text())
    assert {"mlm", "retrieval", "classify"} <= set(report["results"])
    assert (run / "xlingual" / "eval" / "report.md").exists()
    out = tiny_pipeline["proc"].stdout
    assert "model (meta):" in out and "TensorBoard:" in out
    assert "train loss, first -> last log window: en " in out


def test_no_language_of_phase2_is_memorized(tiny_pipeline):
    """Every language phase 2 trains has held-out text, and its final held-out loss stays within
    MEMORIZATION_MARGIN of the same measure on its training text (the summary says so)."""
    for phase in ("xlingual", "baseline"):
        done = tiny_pipeline["done"][phase]
        gaps = memorization_gaps(done)
        assert set(gaps) == set(tiny_pipeline["cfg"]["phases"][1]["langs"]), phase
        assert all(gap is not None and gap <= MEMORIZATION_MARGIN for gap in gaps.values()), (phase, gaps)
    out = tiny_pipeline["proc"].stdout
    assert out.count(f"[none memorized (margin {MEMORIZATION_MARGIN})]") == 3  # meta, xlingual, baseline


def test_with_baseline_compares_meta_and_single_phase_at_equal_budget(tiny_pipeline):
    run, done = tiny_pipeline["run"], tiny_pipeline["done"]
    assert done["baseline"]["init_from"] is None
    assert done["baseline"]["tokens"] == done["meta"]["tokens"] + done["xlingual"]["tokens"]
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        assert (run / "comparison" / name).stat().st_size > 0, name
    table = (run / "comparison" / "comparison.md").read_text()
    assert "| metric | meta | baseline | diff (meta − baseline) | 95% interval | verdict |" in table


def test_seeds_grow_an_experiment_paired_by_seed(tiny_pipeline):
    """``--seeds 2`` after a 1-seed run reuses seed 1's phases and the shared vocabulary and shards,
    trains both arms of seed 2 with other train and data seeds, and compares the arms paired by seed."""
    run, out = tiny_pipeline["run"], tiny_pipeline["grown"].stdout
    assert "phase meta: complete, skipped" in out and "phase baseline: complete, skipped" in out
    assert "seed 2 of 2" in out and "(train.seed 8, data.seed 1235)" in out
    seed = run / "seeds" / "seed1"
    assert (seed / "tokenizer").is_symlink() and (seed / "shards").resolve() == (run / "shards").resolve()
    for phase in ("meta", "xlingual", "baseline"):
        assert (
            json.loads((seed / phase / "DONE.json").read_text())["step"]
            == tiny_pipeline["done"][phase]["step"]
        )
        assert (seed / phase / "eval" / "report.json").exists() or phase == "meta"
    w0, _ = load_weights(run / "meta")
    w1, _ = load_weights(seed / "meta")
    assert state_dict_digest(w0) != state_dict_digest(w1)  # another init and data order
    comparison = json.loads((run / "comparison" / "comparison.json").read_text())
    assert comparison["n_seeds"] == 2
    for key, m in comparison["metrics"].items():
        assert len(m["meta"]["values"]) == len(m["baseline"]["values"]) == 2, key
        assert m["diff_interval"] is not None and m["diff_interval"][0] <= m["diff"] <= m["diff_interval"][1]
    assert "comparison.md (2 seeds per arm)" in out
    rerun = megameta("pipeline", "--config", str(tiny_pipeline["config"]), "--with-baseline", "--seeds", "2")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    evaluations = [line for line in rerun.stdout.splitlines() if line.startswith("[pipeline] evaluate ")]
    assert "[train]" not in rerun.stdout and len(evaluations) == 4  # 2 seeds x 2 arms
    assert all(line.endswith("exists, skipped") for line in evaluations)


def test_handoff_starts_from_exactly_phase1_final_weights(tiny_pipeline):
    run = tiny_pipeline["run"]
    phase1_final, where = load_weights(run / "meta")
    assert where.name == tiny_pipeline["done"]["meta"]["tag"]
    recorded = tiny_pipeline["done"]["xlingual"]["init_from"]
    assert recorded["weights_sha256"] == state_dict_digest(phase1_final)
    # and phase 2 really trained away from them
    phase2_final, _ = load_weights(run / "xlingual")
    assert state_dict_digest(phase2_final) != recorded["weights_sha256"]


def test_converted_dir_loads_in_transformers_with_identical_logits(tiny_pipeline):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from megameta.convert import model_config_of

    run = tiny_pipeline["run"]
    hf_dir = run / "xlingual" / "hf"
    state, ckpt_dir = load_weights(run / "xlingual")
    ours = XLMRForMaskedLM(model_config_of(ckpt_dir)).eval()
    ours.load_state_dict(state, strict=False)
    hf = AutoModelForMaskedLM.from_pretrained(str(hf_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    batch = tok(
        ["The river and the city.", "La montagne est une ville de la côte."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        a = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = hf(**batch).logits
    mask = batch["attention_mask"].bool()
    assert (a[mask] - b[mask]).abs().max().item() < 1e-5
    fill = pipeline("fill-mask", model=str(hf_dir), tokenizer=str(hf_dir))
    preds = fill(f"The river {tok.mask_token} the city.")
    assert len(preds) == 5 and all("token_str" in p for p in preds)


def test_tensorboard_has_training_scalars(tiny_pipeline):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_pipeline["run"] / "xlingual" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/loss_en",
        "train/loss_ru",
        "train/lr",
        "train/tokens_per_s",
        "valid/loss_fr",
        "valid/loss_ru",
        "train_text/loss_ru",
        "data/share_ru",
    ):
        assert tag in tags, tag
    assert all(ev.value > 0 for ev in acc.Scalars("train/loss"))


def test_rerun_skips_finished_steps(tiny_pipeline):
    proc = megameta("pipeline", "--config", str(tiny_pipeline["config"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for marker in (
        "tokenizer: ",
        "phase meta: complete, skipped",
        "phase xlingual: complete, skipped",
        "up to date, skipped",
        "exists, skipped",
    ):
        assert marker in proc.stdout, marker
    assert "[train]" not in proc.stdout


def test_phase2_without_phase1_is_exit_2_naming_the_path(tiny_pipeline, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for part in ("tokenizer", "shards"):
        shutil.copytree(tiny_pipeline["run"] / part, run / part)
    cfg = tiny_config(run, tiny_pipeline["cfg"]["corpus"]["dir"])
    path = write_config(tmp_path / "c.yaml", cfg)
    proc = megameta("train", "--config", str(path), "--phase", "xlingual")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"{run / 'meta'} does not exist" in proc.stderr.strip().splitlines()[-1]


def test_missing_corpus_file_is_exit_2_naming_the_path(tiny_pipeline, tmp_path):
    cfg = tiny_config(tmp_path / "run", tiny_pipeline["cfg"]["corpus"]["dir"])
    cfg["data"]["sources"]["en"] = ["wiki/en/missing.jsonl"]
    path = write_config(tmp_path / "c.yaml", cfg)
    proc = megameta("tokenizer", "--config", str(path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "corpus file not found" in proc.stderr and "wiki/en/missing.jsonl" in proc.stderr
