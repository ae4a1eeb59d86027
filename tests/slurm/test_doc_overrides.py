"""Every dotted config override shown to users loads.

Scans docs/*.md, README.md, comments in configs/**/*.yaml and slurm/* for ``key.path=value``
(e.g. ``optim.lr=3e-4``, ``phases[1].alpha=0.5``) whose first part is a top-level config field,
and loads each with :func:`megameta.config.load_config` on the demo config: a renamed or misspelt
key in an example fails here instead of exiting 2 for the user who copies it. A value written as
a placeholder (``train.eval_suite_every=N``, ``=...``, ``=<seconds>``) checks the key with the
field's value from the demo config.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from megameta.config import RunConfig, dump_config, load_config
from megameta.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "configs" / "demo" / "pipeline.yaml"
TOP_LEVEL = {f.name for f in dataclasses.fields(RunConfig)}
OVERRIDE = re.compile(r"(?<![\w.\-/$])([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)+)=([^\s`\"'),;|]+)")


def _sources() -> list[tuple[str, str]]:
    """(file, text) of every place an override is shown; YAML configs contribute their comments only."""
    out = []
    for path in [
        *sorted((REPO / "docs").glob("*.md")),
        REPO / "README.md",
        *sorted((REPO / "slurm").iterdir()),
    ]:
        if path.is_file():
            out.append((str(path.relative_to(REPO)), path.read_text()))
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        comments = "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line)
        out.append((str(path.relative_to(REPO)), comments))
    return out


def shown_overrides() -> list[tuple[str, str]]:
    found = []
    for name, text in _sources():
        for key, value in OVERRIDE.findall(text):
            if key.split(".")[0].split("[")[0] in TOP_LEVEL:
                found.append((name, f"{key}={value.rstrip('.:')}"))
    return sorted(set(found))


def _current_value(key: str):
    """The demo config's value at a dotted path such as ``phases[0].init_from``."""
    node = dump_config(load_config(str(BASE)))
    for part in key.split("."):
        name, _, index = part.partition("[")
        node = node[name]
        if index:
            node = node[int(index.rstrip("]"))]
    return node


def test_the_scan_finds_the_documented_examples():
    found = {o for _, o in shown_overrides()}
    # the templates' EXTRA_ARGS example and the walk-through's; a scan that finds nothing proves nothing
    assert "optim.lr=3e-4" in found and len(found) >= 5, found


@pytest.mark.parametrize(("where", "override"), shown_overrides())
def test_documented_override_loads(where, override):
    key, value = override.split("=", 1)
    if re.fullmatch(r"[A-Z][A-Z_]*|\.*|<.*>", value):  # a placeholder (N, ..., <x>): check the key, typed
        value = (
            yaml.safe_dump(_current_value(key), default_flow_style=True).strip().removesuffix("...").strip()
        )
    try:
        load_config(str(BASE), [f"{key}={value}"])
    except ConfigError as e:
        pytest.fail(f"{where}: the example override {override} does not load: {e}")


def test_a_bad_override_is_caught():
    """The check above can fail: the old, wrong key is rejected."""
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(str(BASE), ["train.lr=3e-4"])
