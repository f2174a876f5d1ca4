from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple

import pytest

from meshdream.config import from_dict, load_config, merge, save_config, to_dict
from meshdream.errors import UserInputError


@dataclass
class Inner:
    lr: float = 0.01
    range: Tuple[float, float] = (0.0, 1.0)


@dataclass
class Outer:
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    clip: Optional[float] = None
    inner: Inner = field(default_factory=Inner)


def test_yaml_overrides_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 5\ninner:\n  lr: 1\n  range: [0.5, 2]\n")
    cfg = load_config(Outer, p)
    assert cfg.steps == 5 and cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.range == (0.5, 2.0)
    assert cfg.mode == "a" and cfg.clip is None


def test_unknown_key_names_key_and_allowed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  learning_rate: 1\n")
    with pytest.raises(UserInputError, match=r"inner\.learning_rate.*allowed keys in inner: lr, range"):
        load_config(Outer, p)


@pytest.mark.parametrize(
    "data, match",
    [({"steps": "ten"}, "steps: expected an integer"), ({"mode": "c"}, "mode: 'c' is not allowed"),
     ({"inner": {"range": [1]}}, r"inner.range: expected 2 values"), ({"steps": True}, "expected an integer")],
)
def test_bad_values(data, match):
    with pytest.raises(UserInputError, match=match):
        from_dict(Outer, data)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UserInputError, match="must hold a mapping"):
        load_config(Outer, bad)


def test_round_trip(tmp_path):
    cfg = merge(Outer(), {"clip": 2, "inner": {"lr": 0.5}})
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Outer, tmp_path / "out.yaml") == cfg
    assert to_dict(cfg)["inner"]["range"] == [0.0, 1.0]


def test_overrides_skip_none():
    cfg = load_config(Outer, None, {"steps": None, "clip": 3})
    assert cfg.steps == 10 and cfg.clip == 3.0
