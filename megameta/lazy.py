"""Lazy re-exports (PEP 562) for packages whose submodules are costly to import (torch, transformers)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_getattr(package: str, exports: dict[str, list[str]]) -> tuple[Callable[[str], object], list[str]]:
    """A module-level ``__getattr__`` and ``__all__`` for ``package``, which re-exports ``names`` from
    each submodule of ``exports`` (submodule -> names). A name's submodule is imported on first
    access, so importing the package itself costs nothing."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{where[name]}"), name)

    return __getattr__, sorted(where)
