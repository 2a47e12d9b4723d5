"""Build frozen dataclasses from plain YAML data, checking every key and type on the way.

The config types in cnnlab.config describe params.yaml; this module turns a nested dict into them
and fails on the first problem with a message that names the key (`experiments.cnn.optimizer.lr`),
so a typo in params.yaml stops a run before it spends any time.

Field metadata understood here:
- `choices`: a callable returning the valid names (registries fill it lazily);
- `min` / `max`: inclusive numeric bounds;
- `gt`: an exclusive lower bound (for learning rates and the like);
- `pattern`: a regular expression a string must match in full.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Union

from cnnlab.errors import CnnlabError


class ParamsError(CnnlabError):
    """params.yaml (or a -S override) holds something cnnlab cannot use."""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def build(cls: type, data: Any, path: str) -> Any:
    """Return `cls` (a dataclass) filled from `data`, validated; `path` names it in errors."""
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping, got {_type_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{path}.{unknown[0]}: unknown key (valid keys: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{key}: missing required key")
            continue
        values[name] = _check(hints[name], data[name], key, f.metadata)
    try:
        return cls(**values)
    except ParamsError as exc:  # a cross-field check in __post_init__: say where it happened
        raise ParamsError(f"{path}: {exc}" if path else str(exc)) from exc


def _check(tp: Any, value: Any, key: str, meta: typing.Mapping = types.MappingProxyType({})):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check(inner[0], value, key, meta)
        for candidate in inner:
            try:
                return _check(candidate, value, key, meta)
            except ParamsError:
                continue
        raise ParamsError(f"{key}: {value!r} is not one of the allowed types")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{key}: {value!r} is not valid (choose from: "
                              f"{', '.join(map(str, args))})")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {_type_name(value)}")
        return {str(k): _check(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key}: expected a list, got {_type_name(value)}")
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ParamsError(f"{key}: expected {len(item_types)} values, got {len(value)}")
        pairs = enumerate(zip(item_types, value, strict=True))
        return tuple(_check(t, v, f"{key}[{i}]") for i, (t, v) in pairs)
    return _check_scalar(tp, value, key, meta)


def _check_scalar(tp: type, value: Any, key: str, meta: typing.Mapping) -> Any:
    # bool is a subclass of int in Python; `epochs: true` is a mistake, not 1.
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ParamsError(f"{key}: expected {tp.__name__}, got {_type_name(value)} {value!r}")
    if "choices" in meta:
        choices = list(meta["choices"]())
        if value not in choices:
            raise ParamsError(f"{key}: unknown name {value!r} (choose from: {', '.join(choices)})")
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        hint = meta.get("hint", f"it must match {meta['pattern']}")
        raise ParamsError(f"{key}: {value!r} is not valid ({hint})")
    if "min" in meta and value < meta["min"]:
        raise ParamsError(f"{key}: must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ParamsError(f"{key}: must be <= {meta['max']}, got {value!r}")
    if "gt" in meta and not value > meta["gt"]:
        raise ParamsError(f"{key}: must be > {meta['gt']}, got {value!r}")
    return value
