"""The command-line surface is a contract (DESIGN.md section 3): a snapshot of every verb and flag.

A change here is deliberate: update ``tests/cli_surface.json`` together with the docs, with
``python tests/test_cli.py --update``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_surface.json")


def cli_surface() -> dict[str, list[str]]:
    """verb -> its positional names and option strings (sorted), from the real parser."""
    from megameta.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    surface = {}
    for verb, p in sorted(sub.choices.items()):
        names = []
        for action in p._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            names.extend(action.option_strings or [action.dest])
        surface[verb] = sorted(names)
    return surface


def test_cli_surface_matches_the_snapshot():
    assert cli_surface() == json.loads(SNAPSHOT.read_text())


def test_every_verb_has_help_and_config_verbs_take_overrides():
    from megameta.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert all(choice.help for choice in sub._choices_actions)
    for verb, names in cli_surface().items():
        if "--config" in names and verb != "convert":  # convert's --config only checks --from-hf input
            assert "overrides" in names, verb


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    SNAPSHOT.write_text(json.dumps(cli_surface(), indent=2) + "\n")


def test_every_docstring_can_be_printed():
    """`help()` and `--help` print docstrings as UTF-8: an escape like a lone surrogate in one breaks them."""
    import importlib
    import pkgutil

    import megameta

    bad = []
    for info in pkgutil.walk_packages(megameta.__path__, "megameta."):
        module = importlib.import_module(info.name)
        for obj in (module, *vars(module).values()):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and getattr(obj, "__module__", info.name) == info.name:
                try:
                    doc.encode("utf-8")
                except UnicodeEncodeError as e:
                    where = info.name if obj is module else f"{info.name}.{getattr(obj, '__name__', '?')}"
                    bad.append(f"{where}: {e}")
    assert not bad, bad
