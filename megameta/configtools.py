"""A small strict loader from nested dicts (YAML) into nested dataclasses.

Every error names the full dotted path of the offending field, e.g.
``phases[1].alpha: must be in (0, 1], got 1.5``. Unknown keys are rejected
(with a "did you mean" hint), types are checked, and each dataclass may define
``validate(self, path: str)`` for range checks, called after its fields load.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, TypeVar

import yaml

from megameta.errors import ConfigError

#: A number in scientific notation, which YAML 1.1 leaves a string when it has no dot (3e-4, 1e6).
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

T = TypeVar("T")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{path}: expected {_type_name(tp)}, got {value!r}"
        )
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list or tp is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, item_tp, _join(path, i)) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return {_convert(k, key_tp, path): _convert(v, val_tp, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp in (int, float) and isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        # YAML 1.1 reads 3e-4 and 1e6 (no dot) as strings; they are what users write for lrs and budgets.
        value = float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # Accept 1e6-style floats that are whole numbers: YAML users write token budgets that way.
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {_type_name(tp)}")


def check(cond: bool, path: str, msg: str) -> None:
    """Raise ConfigError ``"<path>: <msg>"`` unless ``cond``: the one shape of a validation message."""
    if not cond:
        raise ConfigError(f"{path}: {msg}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict, strictly. ``path`` prefixes error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else f"; valid keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"{_join(path, str(key))}: unknown key{extra}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, name)}: required key is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path or cls.__name__)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (the YAML mirror of the tree)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _parse_path(dotted: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in dotted.split("."):
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            if not index.lstrip("-").isdigit():
                raise ConfigError(f"override '{dotted}': bad list index '[{index}]'")
            parts.append(int(index))
            rest = rest.lstrip("[")
    if not parts:
        raise ConfigError(f"override '{dotted}': empty key")
    return parts


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b[1].c=value`` overrides (values parsed as YAML) to a raw config dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}': expected KEY=VALUE")
        parts = _parse_path(key.strip())
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(
                f"override '{item}': value is not valid YAML ({e.__class__.__name__})"
            ) from None
        node: Any = data
        walked = ""
        for part in parts[:-1]:
            walked = _join(walked, part)
            if isinstance(part, int):
                if not isinstance(node, list) or not -len(node) <= part < len(node):
                    raise ConfigError(f"override '{item}': {walked} does not exist")
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"override '{item}': {walked} is not a mapping")
                node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or not -len(node) <= last < len(node):
                raise ConfigError(f"override '{item}': {_join(walked, last)} does not exist")
        elif not isinstance(node, dict):
            raise ConfigError(f"override '{item}': {walked} is not a mapping")
        node[last] = value
    return data


def load_yaml(path: str) -> dict:
    """Read a YAML mapping; errors name the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: invalid YAML: {e.problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data
