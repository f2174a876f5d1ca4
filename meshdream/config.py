"""Plain dataclass configs, loaded from YAML with strict key checking.

Every stage owns one dataclass (``CoarseConfig`` in ``meshdream.coarse`` …). Its defaults are the
truth; ``configs/*.yaml`` are presets that override some of them. Unknown keys and values of the
wrong type are errors that name the key and list what is allowed.

This is the one place values are validated, whether they come from YAML, the CLI or the Python API:
numbers must be finite, and a field declared with :func:`bounded` must lie in its range (the CLI's
options use the same ranges, see :func:`limits_of`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from typing import Any, Mapping, Type, TypeVar

import yaml

from .errors import UserInputError

T = TypeVar("T")

SEED_MAX = 2**64 - 1  # torch.manual_seed takes seeds up to this


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """A dataclass field with ``default`` whose values must satisfy ``>= ge``, ``> gt`` and ``<= le``."""
    return dataclasses.field(default=default, metadata={"limits": (ge, gt, le)})


def limits_of(cls: type, name: str) -> tuple[float | None, float | None, float | None]:
    """(ge, gt, le) of field ``name`` of dataclass ``cls`` (Nones where unbounded)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("limits", (None, None, None))
    raise KeyError(name)


def _check_limits(value: Any, limits: tuple, where: str) -> None:
    ge, gt, le = limits
    if value is None or isinstance(value, bool):
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, (int, float)):
            continue
        if (ge is not None and v < ge) or (gt is not None and v <= gt) or (le is not None and v > le):
            parts = [f">= {ge}" if ge is not None else None, f"> {gt}" if gt is not None else None,
                     f"<= {le}" if le is not None else None]
            raise UserInputError(f"{where}: {value!r} is out of range; it must be {' and '.join(p for p in parts if p)}")


def _key_name(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_keys(data: Mapping[str, Any], types_: dict[str, Any], where: str) -> None:
    unknown = sorted((_key_name(k) for k in data if not (isinstance(k, str) and k in types_)))
    if unknown:
        prefix = f"{where}." if where else ""
        raise UserInputError(
            f"unknown config key {prefix}{unknown[0]}; allowed keys{' in ' + where if where else ''}: {', '.join(sorted(types_))}"
        )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise UserInputError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserInputError as e:
                errors.append(str(e))
        raise UserInputError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise UserInputError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise UserInputError(f"{where}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is typing.Literal:
        if value not in args:
            raise UserInputError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserInputError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # a YAML integer too large for a float
            number = float("inf")
        if not math.isfinite(number):
            raise UserInputError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise UserInputError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: Type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys raise UserInputError listing known ones."""
    if not isinstance(data, Mapping):
        raise UserInputError(f"{where or cls.__name__}: expected a mapping of {cls.__name__} fields, got {data!r}")
    types_ = _field_types(cls)
    _check_keys(data, types_, where)
    limits = _field_limits(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        kwargs[key] = _coerce(value, types_[key], name)
        _check_limits(kwargs[key], limits[key], name)
    return cls(**kwargs)


def _field_limits(cls: type) -> dict[str, tuple]:
    return {f.name: f.metadata.get("limits", (None, None, None)) for f in dataclasses.fields(cls)}


def merge(config: T, overrides: Mapping[str, Any], where: str = "") -> T:
    """Return a copy of dataclass ``config`` with (nested) ``overrides`` applied and type-checked."""
    if not isinstance(overrides, Mapping):
        raise UserInputError(f"{where or type(config).__name__}: expected a mapping of {type(config).__name__} fields, "
                             f"got {overrides!r}")
    types_ = _field_types(type(config))
    _check_keys(overrides, types_, where)
    limits = _field_limits(type(config))
    changes = {}
    for key, value in overrides.items():
        name = f"{where}.{key}" if where else key
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = merge(current, value, where=name)
        else:
            changes[key] = _coerce(value, types_[key], name)
            _check_limits(changes[key], limits[key], name)
    return dataclasses.replace(config, **changes)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a UserInputError naming the path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f"config file {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise UserInputError(f"config file {path!r} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"config file {path!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserInputError(f"config file {path!r} is not valid YAML: {e}") from None
    except RecursionError:
        raise UserInputError(f"config file {path!r} is nested too deeply to read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"config file {path!r} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls: Type[T], path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any), then ``overrides`` (None values skipped)."""
    config = cls()
    if path is not None:
        config = merge(config, load_yaml(path))
    if overrides:
        config = merge(config, {k: v for k, v in overrides.items() if v is not None})
    return config


def stage_config(cls: Type[T], config: Any, overrides: Mapping[str, Any]) -> T:
    """A stage config from a dataclass instance, a YAML path or None, with CLI overrides (None values skipped) applied."""
    if isinstance(config, cls):
        return merge(config, {k: v for k, v in overrides.items() if v is not None})
    if config is not None and not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"config must be a {cls.__name__}, a YAML path or None, got {type(config).__name__}")  # a caller's bug
    return load_config(cls, config, overrides)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (tuples become lists, so it round-trips through YAML)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML atomically."""
    from .checkpoint import atomic_write_bytes

    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write_bytes(path, text.encode("utf-8"))
