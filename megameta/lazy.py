"""Lazy package exports (PEP 562): a package lists its public names without importing their modules.

Used where importing a package must stay cheap (loading a run config touches
``megameta.evaluate.config`` and ``megameta.data.demo.sources``; their packages must not pull in
torch, matplotlib or the package clients on the way).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package`` whose ``exports`` maps submodule -> public names.

    ``__getattr__(name)`` imports ``package.<submodule>`` on first use and returns its ``name``;
    names not exported raise AttributeError (so ``from package import submodule`` still imports
    the submodule).
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{where[name]}"), name)

    return sorted(where), __getattr__
