"""``data`` config fields for large corpora: {lang} source patterns, text layout, dedup."""

from __future__ import annotations

import pytest

from megameta.config import load_config
from megameta.errors import ConfigError


def test_source_pattern_expands_per_language_and_explicit_entries_win():
    cfg = load_config(
        None,
        [
            "data.langs=[en, sw, yo]",
            "data.source_pattern=cc100/{lang}.txt.xz",
            "data.valid_source_pattern=valid/{lang}.txt.gz",
            "data.sources={yo: [yo/a.txt, yo/b.txt]}",
            "data.format=paragraphs",
            "data.dedup=true",
        ],
    )
    assert cfg.data.sources == {
        "yo": ["yo/a.txt", "yo/b.txt"], "en": ["cc100/en.txt.xz"], "sw": ["cc100/sw.txt.xz"],
    }  # fmt: skip
    assert cfg.data.valid_sources["sw"] == ["valid/sw.txt.gz"]
    assert (cfg.data.format, cfg.data.dedup) == ("paragraphs", True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.sources={en: [a.txt]}", "data.format=docs"], "data.format: must be lines or paragraphs"),
        (["data.langs=[en]", "data.source_pattern=cc100/en.txt"], "data.source_pattern: must contain {lang}"),
        (["data.source_pattern=cc100/{lang}.txt"], "data.langs: needs the languages of source_pattern"),
        (["data.sources={en: [a.txt]}", "data.langs=[en]"], "data.source_pattern: needed when data.langs"),
        (["data.langs=[en, en]", "data.source_pattern=x/{lang}"], "data.langs: has duplicates"),
    ],
)
def test_bad_data_fields_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_config(None, overrides)
