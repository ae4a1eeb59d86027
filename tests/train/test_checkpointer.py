"""The data-stream fingerprint: a resume that would continue on another sample stream is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from megameta.errors import InputError
from megameta.train.checkpointer import check_data_stream

SAVED = {"data.seed": 1234, "data.max_seq_len": 128, "phases[1].alpha": 0.3, "phases[1].langs": ["en", "fr"]}


def test_same_stream_resumes():
    check_data_stream(SAVED, dict(SAVED), Path("ckpt"))


def test_checkpoints_without_a_fingerprint_are_accepted():
    check_data_stream(None, SAVED, Path("ckpt"))


@pytest.mark.parametrize(
    ("field", "value"), [("data.seed", 7), ("phases[1].alpha", 0.5), ("phases[1].langs", ["en"])]
)
def test_a_changed_field_is_named(field, value):
    with pytest.raises(InputError) as err:
        check_data_stream(SAVED, {**SAVED, field: value}, Path("ckpt"))
    assert str(err.value).startswith(
        f"{field}: ckpt was trained with {SAVED[field]!r}, this run has {value!r}"
    )


def test_fields_new_in_this_version_do_not_block_older_checkpoints():
    check_data_stream(SAVED, {**SAVED, "data.whole_word_mask": False}, Path("ckpt"))
