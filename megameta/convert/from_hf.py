"""Hugging Face XLM-R model dir -> weights-only training checkpoint.

``megameta convert --from-hf HF_DIR OUT`` makes OUT a checkpoint dir
(``OUT/checkpoints/step_00000000`` in DeepSpeed's ZeRO-0 layout, plus ``OUT/tokenizer``)
that ``phases[i].init_from=OUT`` starts training from, and that ``megameta convert OUT HF2``
turns back into a bitwise-equal HF dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from megameta.checkpoint import CheckpointMeta, finalize, staging_dir, state_dict_digest, tag_for
from megameta.convert.outdir import PROVENANCE, copy_tokenizer, has_tokenizer, staged_dir
from megameta.errors import InputError
from megameta.layout import CHECKPOINTS, TOKENIZER
from megameta.model import ModelConfig, from_hf_config
from megameta.model.hf_adapter import (
    add_tied,
    canonical_state,
    check_shapes,
    expected_shapes,
    is_hf_dir,
    read_hf_state,
)


def hf_model_config(hf_dir: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of an HF dir's config.json (ConfigError when our model cannot represent it)."""
    from transformers import AutoConfig

    return from_hf_config(AutoConfig.from_pretrained(str(hf_dir)))


def _vocab_of(tok_dir: Path) -> list[str] | None:
    """The pieces of ``tokenizer.json`` by id (added tokens included); None without one."""
    tj = tok_dir / "tokenizer.json"
    if not tj.exists():
        return None
    data = json.loads(tj.read_text())
    vocab = data["model"].get("vocab")
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        pieces = [p[0] for p in vocab]
    elif isinstance(vocab, dict):
        pieces = [p for p, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    else:
        return None
    for tok in data.get("added_tokens", []):
        if tok["id"] >= len(pieces):
            pieces.extend([""] * (tok["id"] + 1 - len(pieces)))
        pieces[tok["id"]] = tok["content"]
    return pieces


def _check_vocab(hf_tok: Path, run_tok: Path) -> None:
    a, b = _vocab_of(hf_tok), _vocab_of(run_tok)
    if a is None or b is None:
        return
    if len(a) != len(b):
        raise InputError(
            f"vocabularies differ: {hf_tok} has {len(a)} tokens, the run's tokenizer {run_tok} has {len(b)}"
        )
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            raise InputError(f"vocabularies differ: token {i} is {x!r} in {hf_tok} but {y!r} in {run_tok}")


def _check_input(hf_dir: Path) -> None:
    if not hf_dir.is_dir():
        raise InputError(f"--from-hf: {hf_dir} is not a directory")
    if not is_hf_dir(hf_dir):
        raise InputError(
            f"--from-hf: {hf_dir} is not a Hugging Face model dir (config.json + model.safetensors)"
        )
    cfg_json = json.loads((hf_dir / "config.json").read_text())
    if cfg_json.get("model_type") not in ("xlm-roberta", "roberta"):
        raise InputError(
            f"{hf_dir / 'config.json'}: model_type {cfg_json.get('model_type')!r} is not xlm-roberta"
        )
    if not has_tokenizer(hf_dir):
        raise InputError(f"{hf_dir}: no tokenizer files (sentencepiece.bpe.model or tokenizer.json)")


def _fit_run_config(hf_dir: Path, got: dict, cfg: ModelConfig, run_config) -> ModelConfig:
    """The run config's model, checked to hold exactly the HF weights (shapes, ids, vocabulary)."""
    want = run_config.model.resolved()
    run_tok = run_config.tokenizer_dir
    if want.vocab_size == 0 and (run_tok / "tokenizer.json").exists():
        want.vocab_size = len(_vocab_of(run_tok) or []) or cfg.vocab_size
    elif want.vocab_size == 0:
        want.vocab_size = cfg.vocab_size
    check_shapes(hf_dir, got, expected_shapes(want), "the HF weights", "the run config's model")
    for name in ("pad_token_id", "max_position_embeddings", "layer_norm_eps"):
        if getattr(want, name) != getattr(cfg, name):
            raise InputError(
                f"model.{name}: the run config has {getattr(want, name)}, {hf_dir} has {getattr(cfg, name)}"
            )
    if run_tok.exists():
        _check_vocab(hf_dir, run_tok)
    return want


def from_hf(hf_dir: str | Path, out_dir: str | Path, run_config=None) -> dict:
    """HF XLM-R dir -> weights-only checkpoint dir for ``init_from`` (and for ``convert`` back).

    With ``run_config`` (a ``RunConfig``), the HF weights must fit its model exactly and the HF
    tokenizer must have the same vocabulary as the run's tokenizer (when that exists); the
    checkpoint then keeps the run's execution options (dropout, compile, ...). Returns the provenance.
    """
    from megameta.config import dump_config

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    _check_input(hf_dir)
    cfg = hf_model_config(hf_dir)
    state = canonical_state(read_hf_state(hf_dir), hf_dir)
    got = {k: v.shape for k, v in state.items()}
    check_shapes(hf_dir, got, expected_shapes(cfg), "the weights", "config.json")
    run_cfg_dict = None
    if run_config is not None:
        cfg = _fit_run_config(hf_dir, got, cfg, run_config)
        run_cfg_dict = dump_config(run_config)
    with staged_dir(out_dir) as work:
        copy_tokenizer(hf_dir, work / TOKENIZER)
        module = add_tied({k: state[k].float().contiguous() for k in expected_shapes(cfg)})
        root, tag = work / CHECKPOINTS, tag_for(0)
        stage = staging_dir(root, tag) / tag
        stage.mkdir(parents=True)
        meta = CheckpointMeta(step=0, samples_seen=0, tokens_seen=0, phase="from_hf", world_size=1,
                              model=dump_config(cfg), config=run_cfg_dict, zero_stage=0, precision="fp32",
                              source_hf_dir=str(hf_dir.resolve()))  # fmt: skip
        _save_zero0(stage, module, meta)
        finalize(root, tag, meta)
        provenance = {"source_hf_dir": str(hf_dir.resolve()), "checkpoint": str(out_dir / CHECKPOINTS / tag),
                      "config_checked": run_cfg_dict is not None, "weights_sha256": state_dict_digest(module)}  # fmt: skip
        (work / PROVENANCE).write_text(json.dumps(provenance, indent=2))
    return provenance


def _save_zero0(stage: Path, module: dict[str, torch.Tensor], meta: CheckpointMeta) -> None:
    """DeepSpeed's ZeRO-0 model states file (what ``engine.save_checkpoint`` writes), no optimizer state."""
    import deepspeed

    info = {k: getattr(meta, k) for k in ("step", "samples_seen", "tokens_seen", "phase", "world_size")}
    torch.save(
        {"module": module, "buffer_names": [], "optimizer": None, "param_shapes": None, "shared_params": None,
         "dp_world_size": 1, "mp_world_size": 1, "ds_version": deepspeed.__version__, "megameta": info},
        stage / "mp_rank_00_model_states.pt",
    )  # fmt: skip
