"""Plain dataclass configs, loaded from YAML with strict key checking.

Every stage owns one dataclass (``CoarseConfig`` in ``meshdream.stages.coarse`` …). Its defaults are
the truth; on top of them, in this order: a named preset shipped in the package
(``meshdream/presets/NAME.yaml``, one section per stage, ``extends: OTHER`` to start from another
preset), a YAML file (``--config``; it may ``extends:`` a preset or another file), then dotted
``key=value`` overrides from the command line (``guidance.guidance_scale=50``; values are YAML, so
``50`` is a number, ``[1, 1, 1]`` a list, ``null`` None). Unknown keys and values of the wrong type are
errors that name the key and list what is allowed.

This is the one place values are validated, whether they come from YAML, the CLI or the Python API:
numbers must be finite, and a field declared with :func:`bounded` must lie in its range (the CLI's
options use the same ranges, see :func:`limits_of`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Type, TypeVar, Union

import yaml

from .errors import UserInputError

T = TypeVar("T")

SEED_MAX = 2**64 - 1  # torch.manual_seed takes seeds up to this
# optimisation steps of a stage: GPU recipes run 10^4 (threestudio: 10,000-25,000); 10^24 would run for ever
ITERS_MAX = 1_000_000


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


PRESETS = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Names of the presets shipped in the package (``meshdream/presets/NAME.yaml``)."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def section_of(cls: type) -> str:
    """The preset section a stage config reads (its ``preset_section`` class attribute)."""
    section = getattr(cls, "preset_section", None)
    if section is None:
        raise TypeError(f"{cls.__name__} has no preset_section; presets cannot configure it")
    return section


def _deep_merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, Mapping) else value
    return out


def _extends(value: Any, section: Optional[str], here: Path, seen: tuple) -> dict:
    """What an ``extends:`` line names: a preset (its ``section``) or a YAML file relative to ``here``."""
    if not isinstance(value, str) or not value:
        raise UserInputError(f"extends: expected a preset name or a YAML file, got {value!r}")
    if value.endswith((".yaml", ".yml")) or os.sep in value or "/" in value:
        return read_config_file(here / value, section, seen)
    return preset_data(value, section, seen)


def preset_data(name: str, section: Optional[str] = None, _seen: tuple = ()) -> dict:
    """The mapping preset ``name`` gives (with what it extends), or only its ``section`` (e.g. "coarse")."""
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise UserInputError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    if path in _seen:
        raise UserInputError(f"preset {name!r} extends itself (through {' -> '.join(p.stem for p in _seen)})")
    data = load_yaml(path)
    base = _extends(data.pop("extends"), None, path.parent, _seen + (path,)) if "extends" in data else {}
    data = _deep_merge(base, data)
    if section is None:
        return data
    part = data.get(section) or {}
    if not isinstance(part, dict):
        raise UserInputError(f"preset {name!r}: section {section!r} must be a mapping")
    return part


def read_config_file(path: str | os.PathLike, section: Optional[str] = None, _seen: tuple = ()) -> dict:
    """A stage's YAML config file as a mapping, with what its ``extends:`` names underneath."""
    path = Path(path)
    if path.resolve() in _seen:
        raise UserInputError(f"config file {str(path)!r} extends itself")
    data = load_yaml(path)
    if "extends" not in data:
        return data
    base = _extends(data.pop("extends"), section, path.parent, _seen + (path.resolve(),))
    return _deep_merge(base, data)


_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(.*)$", re.S)


def split_override(text: str) -> tuple[str, str] | None:
    """("a.b", "value") for an override-shaped string ``a.b=value`` (``=`` before any space), else None."""
    m = _OVERRIDE.match(text)
    if m is None or " " in text[:m.end(1)]:
        return None
    return m.group(1), m.group(2)


def parse_overrides(items: Union[Sequence[str], Mapping[str, Any], None]) -> dict:
    """Nested overrides from ``["guidance.guidance_scale=50", ...]`` (values parsed as YAML) or from a
    mapping with dotted or nested keys. A malformed item is a UserInputError that shows the form."""
    import yaml

    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        if isinstance(items, str):
            items = [items]
        pairs = []
        for item in items:
            kv = split_override(item)
            if kv is None:
                raise UserInputError(f"unexpected argument {item!r}: settings after the options are KEY=VALUE with a dotted "
                                     "config key, e.g. iters=100 guidance.guidance_scale=50 (quote a prompt that has spaces)")
            key, raw = kv
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw  # not YAML: the plain string
            pairs.append((key, value))
    nested: dict = {}
    for key, value in pairs:
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserInputError(f"override {key!r} conflicts with another override of {part!r}")
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            value = _deep_merge(node[parts[-1]], value)
        node[parts[-1]] = value
    return nested


def route_overrides(items: Union[Sequence[str], Mapping[str, Any], None], stages: Mapping[str, type]) -> dict[str, dict]:
    """Split overrides between stages (``{"coarse": CoarseConfig, "refine": RefineConfig}``): ``coarse.KEY=V``
    goes to that stage only, a plain ``KEY=V`` to every stage whose config has the top-level key ``KEY``.
    A key no stage has is a UserInputError listing the allowed ones."""
    nested = parse_overrides(items)
    out: dict[str, dict] = {name: {} for name in stages}
    for key, value in nested.items():
        if key in stages:
            if not isinstance(value, Mapping):
                raise UserInputError(f"override {key}={value!r}: give a key of the {key} stage, e.g. {key}.iters=100")
            out[key] = _deep_merge(out[key], value)
            continue
        owners = [name for name, cls in stages.items() if key in _field_types(cls)]
        if not owners:
            allowed = sorted(set().union(*(_field_types(cls) for cls in stages.values())))
            raise UserInputError(f"unknown config key {key}; allowed keys: {', '.join(allowed)} "
                                 f"(prefix one stage's with {' or '.join(n + '.' for n in stages)})")
        for name in owners:
            out[name] = _deep_merge(out[name], {key: value})
    return out


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of dataclass ``cls`` (nested dataclasses expanded), e.g. ``guidance.guidance_scale``."""
    out = []
    for name, tp in _field_types(cls).items():
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        if inner:
            out += config_keys(inner[0], f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def build_config(cls: Type[T], config: Any = None, preset: Optional[str] = None,
                 overrides: Union[Sequence[str], Mapping[str, Any], None] = None) -> Optional[T]:
    """``cls`` defaults < preset ``preset`` (its section for ``cls``) < ``config`` (a YAML path, or a dataclass
    instance that replaces both) < dotted ``overrides``; None when none of them is given (the caller's default)."""
    if config is None and preset is None and not overrides:
        return None
    if isinstance(config, cls):
        if preset is not None:
            raise UserInputError("give either a config object or a preset, not both")
        cfg = config
    elif config is not None and not isinstance(config, (str, os.PathLike)):
        raise UserInputError(f"config must be a {cls.__name__}, a YAML path or None, got {type(config).__name__}")
    else:
        section = section_of(cls)
        cfg = cls()
        if preset is not None:
            cfg = merge(cfg, preset_data(preset, section), where="")
        if config is not None:
            cfg = merge(cfg, read_config_file(config, section))
    return merge(cfg, parse_overrides(overrides))


def load_config(cls: Type[T], path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any, with what it ``extends:``), then ``overrides``
    (None values skipped)."""
    config = cls()
    if path is not None:
        config = merge(config, read_config_file(path, getattr(cls, "preset_section", None)))
    if overrides:
        config = merge(config, {k: v for k, v in overrides.items() if v is not None})
    return config


def resume_settings(config: Any, preset: Optional[str], overrides) -> Optional[dict]:
    """On --resume, KEY=VALUE ``overrides`` given without a config file or preset change the checkpoint's saved
    config (compared with it like --iters), not the defaults: the nested settings, or None when a config file or
    preset is given (that full config is what is compared)."""
    if config is not None or preset is not None:
        return None
    return parse_overrides(overrides)


def given_settings(named: Mapping[str, Any], settings: Optional[Mapping[str, Any]]) -> dict:
    """The settings a stage was given: nested KEY=VALUE ``settings`` with the named options that were given (not
    None: --iters, --seed ...) on top."""
    return _deep_merge(dict(settings or {}), {k: v for k, v in named.items() if v is not None})


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
    from .atomic_files import atomic_write_bytes

    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write_bytes(path, text.encode("utf-8"))
