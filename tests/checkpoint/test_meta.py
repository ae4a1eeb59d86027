"""CheckpointMeta: the one writer and reader of meta.json."""

from __future__ import annotations

import json

import pytest
from helpers import synthetic_checkpoint

from megameta.checkpoint import META, CheckpointMeta
from megameta.errors import InputError


def test_round_trip_through_finalize(tmp_path):
    stream = {"seed": 1, "alpha": 0.3, "max_seq_len": 32, "vocab_hash": "ab12"}
    final = synthetic_checkpoint(tmp_path, 5, data_stream=stream, config={"run_dir": "x"})
    meta = CheckpointMeta.read(final)
    assert meta.step == 5 and meta.tokens_seen == 1280 and meta.langs == ["en"] and meta.lang_samples == [40]
    assert (
        meta.data_stream == stream and meta.config == {"run_dir": "x"} and meta.tokenizer == "../../tokenizer"
    )
    assert meta.tag == "step_00000005" and set(meta.files) == {"mp_rank_00_model_states.pt"}
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    assert json.loads((final / META).read_text()) == meta.to_dict()


def test_meta_written_before_the_optional_fields_existed_still_reads(tmp_path):
    old = {"step": 0, "samples_seen": 0, "tokens_seen": 0, "phase": "from_hf", "world_size": 1,
           "model": {"hidden_size": 32}, "config": None, "zero_stage": 0, "precision": "fp32",
           "tokenizer": "../../tokenizer", "tag": "step_00000000", "files": {}}  # fmt: skip
    (tmp_path / META).write_text(json.dumps(old))
    meta = CheckpointMeta.read(tmp_path)
    assert (
        meta.langs == []
        and meta.lang_tokens == []
        and meta.data_stream is None
        and meta.source_hf_dir is None
    )


def _renamed(data: dict) -> str:
    data["stpe"] = data.pop("step")
    return json.dumps(data)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda data: '{"step": 1, "samp', "is corrupt"),
        (lambda data: "[1, 2]", "expected a mapping"),
        (_renamed, r"stpe: unknown key \(did you mean 'step'\?\)"),
        (lambda data: json.dumps({**data, "step": "one"}), "step: expected an integer"),
        (lambda data: json.dumps({**data, "langs": "en"}), "langs: expected a list"),
        (lambda data: '{"step": 1}', "samples_seen: required key is missing"),
    ],
)
def test_corrupt_or_unknown_meta_is_input_error_naming_file_and_key(tmp_path, edit, match):
    good = synthetic_checkpoint(tmp_path, 1)
    (good / META).write_text(edit(json.loads((good / META).read_text())))
    with pytest.raises(InputError, match=match) as err:
        CheckpointMeta.read(good)
    assert str(good / META) in str(err.value)


def test_missing_meta_says_incomplete(tmp_path):
    with pytest.raises(InputError, match=r"meta.json missing \(incomplete checkpoint\)"):
        CheckpointMeta.read(tmp_path)
