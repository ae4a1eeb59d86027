"""The pipeline summary's memorization check on known answers (no training needed)."""

from __future__ import annotations

import pytest

from megameta.pipeline import MEMORIZATION_MARGIN, format_gaps, memorization_gaps


def test_gaps_compare_held_out_with_training_text_per_language():
    done = {"valid_loss": {"en": 6.30, "de": 7.20}, "train_text_loss": {"en": 6.25, "de": 6.20, "uk": 5.0}}
    gaps = memorization_gaps(done)
    assert gaps["en"] == pytest.approx(0.05) and gaps["de"] == pytest.approx(1.0) and gaps["uk"] is None


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [
        ({"en": 0.05, "fr": -0.01}, f"[none memorized (margin {MEMORIZATION_MARGIN})]"),
        ({"en": 0.05, "de": 1.0}, f"[MEMORIZED (over {MEMORIZATION_MARGIN}): de]"),
        ({"en": 0.05, "uk": None}, "[no held-out text: uk]"),
        ({"de": 1.0, "uk": None}, f"[MEMORIZED (over {MEMORIZATION_MARGIN}): de; no held-out text: uk]"),
    ],
)
def test_summary_line_names_memorized_and_unchecked_languages(gaps, verdict):
    line = format_gaps(gaps)
    assert line.startswith("held-out - training-text loss: ") and line.endswith(verdict)
    assert "en +0.05" in line or "en" not in gaps


def test_margin_is_inclusive():
    assert format_gaps({"en": MEMORIZATION_MARGIN}).endswith(
        f"[none memorized (margin {MEMORIZATION_MARGIN})]"
    )
