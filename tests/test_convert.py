"""Checkpoint -> HF conversion (ZeRO 0/2/3 on 2 CPU ranks), sharded and bf16 output, --from-hf, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import NO_DROPOUT, make_run, megameta, tiny_config, train, write_config
from safetensors.torch import load_file

from megameta.convert import convert, from_hf, load_weights, model_config_of, state_dict_digest
from megameta.model import XLMRForMaskedLM

pytestmark = pytest.mark.slow
STAGES = (0, 2, 3)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, prepared, zero_runs):
    """The newest checkpoint (step 6, 2 ranks) of each ZeRO stage's run, plus a 2-step ZeRO-3 bf16 one."""
    root = tmp_path_factory.mktemp("convert")
    out = {"root": root, "config": prepared["config"], "prep": prepared["run"]}
    for stage in STAGES:
        out[stage] = zero_runs["runs"][stage] / "meta" / "checkpoints" / "step_00000006"
    run, c = make_run(prepared, root, "zero3-bf16")
    train(c, 2, "train.deepspeed_config=ds_configs/zero3.json", "phases[0].steps=2", "train.precision=bf16",
          *NO_DROPOUT)  # fmt: skip
    out["3-bf16"] = run / "meta" / "checkpoints" / "step_00000002"
    return out


def _hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    index = hf_dir / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    state = {}
    for f in files:
        state.update(load_file(str(hf_dir / f)))
    return state


def _deepspeed_reference(ckpt_dir: Path, stage: int) -> dict[str, torch.Tensor]:
    """What DeepSpeed itself says the fp32 weights are (ZeRO-0 fp32: the module states)."""
    if stage == 0:
        sd = torch.load(ckpt_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return sd["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir.parent), tag=ckpt_dir.name)


@pytest.fixture(scope="module")
def converted(ckpts):
    return {
        stage: (ckpts["root"] / f"hf{stage}", convert(ckpts[stage], ckpts["root"] / f"hf{stage}"))
        for stage in STAGES
    }


def test_zero_stages_give_deepspeeds_exact_weights(ckpts, converted):
    weights = {}
    for stage in STAGES:
        hf_dir, info = converted[stage]
        assert info["verify_max_abs_diff"] < 1e-5 and info["step"] == 6 and info["phase"] == "meta"
        assert json.loads((hf_dir / "megameta_provenance.json").read_text())["zero_stage"] == stage
        for name in ("config.json", "tokenizer.json", "sentencepiece.bpe.model"):
            assert (hf_dir / name).exists(), name
        ours = _hf_tensors(hf_dir)
        ref = _deepspeed_reference(ckpts[stage], stage)
        assert set(ours) == set(ref) - {"lm_head.decoder.weight", "lm_head.decoder.bias"}
        for name, t in ours.items():
            assert torch.equal(t, ref[name].float()), f"ZeRO-{stage} {name}"
        weights[stage] = ours
    for stage in STAGES[1:]:  # different stages: same training up to float reassociation
        for name, t in weights[stage].items():
            torch.testing.assert_close(t, weights[0][name], rtol=0, atol=1e-5)


def test_bf16_training_converts_from_the_fp32_master_weights(ckpts):
    """bf16 runs keep bf16 module weights; the converter must take the fp32 master copy instead."""
    hf_dir = ckpts["root"] / "hf3-bf16"
    info = convert(ckpts["3-bf16"], hf_dir)
    assert info["precision"] == "bf16" and info["verify_max_abs_diff"] < 1e-5
    ours = _hf_tensors(hf_dir)
    ref = _deepspeed_reference(ckpts["3-bf16"], 3)
    assert all(t.dtype == torch.float32 and torch.equal(t, ref[name]) for name, t in ours.items())
    assert any(not torch.equal(t, t.bfloat16().float()) for t in ours.values())  # really not bf16 values


def test_hf_logits_match_our_model_and_fill_mask_runs(ckpts, converted):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    hf_dir, _ = converted[3]
    state, where = load_weights(ckpts[3].parent.parent)  # the phase dir
    assert where == ckpts[3]
    ours = XLMRForMaskedLM(model_config_of(where)).eval()
    ours.load_state_dict(state, strict=True)
    hf = AutoModelForMaskedLM.from_pretrained(str(hf_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    batch = tok(["The river and the city.", "La montagne est une ville."], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = hf(**batch).logits
    mask = batch["attention_mask"].bool()
    assert (a[mask] - b[mask]).abs().max().item() < 1e-5
    preds = pipeline("fill-mask", model=str(hf_dir), tokenizer=str(hf_dir))(
        f"The river {tok.mask_token} the city."
    )
    assert len(preds) == 5 and all("token_str" in p for p in preds)


def test_cli_sharded_and_bf16_outputs_load_and_tie(ckpts, converted):
    from transformers import AutoModelForMaskedLM

    root = ckpts["root"]
    proc = megameta("convert", str(ckpts[2]), str(root / "sharded"), "--shard-size", "20KB")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified" in proc.stdout
    index = json.loads((root / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (root / "sharded" / "model.safetensors").exists()
    single = _hf_tensors(converted[2][0])
    assert all(torch.equal(t, single[k]) for k, t in _hf_tensors(root / "sharded").items())
    hf = AutoModelForMaskedLM.from_pretrained(str(root / "sharded"))
    emb = hf.roberta.embeddings.word_embeddings.weight
    assert hf.lm_head.decoder.weight.data_ptr() == emb.data_ptr() and torch.equal(emb, single[
        "roberta.embeddings.word_embeddings.weight"])  # fmt: skip

    info = convert(ckpts[2], root / "bf16", dtype="bf16")  # verified with the bf16 tolerance
    bf16 = _hf_tensors(root / "bf16")
    assert all(t.dtype == torch.bfloat16 and torch.equal(t, single[k].bfloat16()) for k, t in bf16.items())
    assert AutoModelForMaskedLM.from_pretrained(str(root / "bf16")).dtype == torch.bfloat16
    assert info["dtype"] == "bf16" and info["verify_max_abs_diff"] < 5e-2


def test_from_hf_round_trip_is_lossless_and_trainer_loadable(ckpts, converted):
    root = ckpts["root"]
    hf_dir = converted[0][0]
    proc = megameta("convert", "--from-hf", str(hf_dir), str(root / "ours"), "--config", str(ckpts["config"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "init_from=" in proc.stdout
    state, where = load_weights(root / "ours")  # what phases[i].init_from=<dir> does
    assert where.name == "step_00000000"
    assert state_dict_digest(state) == state_dict_digest(load_weights(hf_dir)[0])
    convert(root / "ours", root / "hf_again")
    a, b = _hf_tensors(hf_dir), _hf_tensors(root / "hf_again")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((root / "hf_again" / "config.json").read_text())["vocab_size"] == json.loads(
        (hf_dir / "config.json").read_text())["vocab_size"]  # fmt: skip


def test_from_hf_mismatch_is_exit_2_naming_tensor_and_shapes(ckpts, converted, tmp_path):
    bad_cfg = write_config(tmp_path / "bad.yaml", {**tiny_config(ckpts["prep"], ckpts["root"]),
                                                   "model": {"preset": "custom", "hidden_size": 48, "num_layers": 2,
                                                             "num_heads": 2, "intermediate_size": 64,
                                                             "max_position_embeddings": 40}})  # fmt: skip
    proc = megameta(
        "convert", "--from-hf", str(converted[0][0]), str(tmp_path / "x"), "--config", str(bad_cfg)
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "roberta.embeddings.word_embeddings.weight" in last and "[252, 32]" in last.replace(", ", ", ")
    assert "[252, 48]" in last and "Traceback" not in proc.stderr
    with pytest.raises(Exception, match="not a Hugging Face model dir"):
        from_hf(tmp_path, tmp_path / "y")


def test_missing_or_half_written_checkpoint_is_exit_2_naming_the_path(ckpts, tmp_path):
    missing = tmp_path / "nope"
    proc = megameta("convert", str(missing), str(tmp_path / "o1"))
    assert proc.returncode == 2 and str(missing) in proc.stderr.strip().splitlines()[-1]

    no_meta = tmp_path / "no_meta" / "step_00000002"
    shutil.copytree(ckpts[3], no_meta)
    (no_meta / "meta.json").unlink()
    proc = megameta("convert", str(no_meta), str(tmp_path / "o2"))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and str(no_meta) in last and "Traceback" not in proc.stderr

    truncated = tmp_path / "truncated" / "step_00000002"
    shutil.copytree(ckpts[3], truncated)
    victim = truncated / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    victim.write_bytes(victim.read_bytes()[:1000])
    proc = megameta("convert", str(truncated), str(tmp_path / "o3"))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and str(victim) in last and "truncated" in last
    assert not (tmp_path / "o3").exists() and not list(tmp_path.glob(".o3-*"))
