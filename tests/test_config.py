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


@pytest.mark.parametrize("stage, yaml_text, match", [
    ("refine", "texture_size: 7", r"texture_size: 7 is out of range; it must be >= 16 and <= 8192"),
    ("coarse", "iters: 0", r"iters: 0 is out of range; it must be >= 1"),
    ("coarse", "iters: -5", r"iters: -5 is out of range"),
    ("coarse", "checkpoint_every: 0", r"checkpoint_every: 0 is out of range"),
    ("refine", "batch_size: 0", r"batch_size: 0 is out of range"),
    ("coarse", "lr: .nan", r"lr: expected a finite number, got nan"),
    ("coarse", "guidance: {guidance_scale: .inf}", r"guidance.guidance_scale: expected a finite number, got inf"),
    ("coarse", "seed: 1180591620717411303424", r"seed: 1180591620717411303424 is out of range"),
    ("coarse", "nerf: {hash_grid: {log2_table_size: 40}}", r"nerf.hash_grid.log2_table_size: 40 is out of range"),
    ("coarse", "1: 2", r"unknown config key 1; allowed keys"),
    ("coarse", "guidance: 3", r"guidance: expected a mapping of GuidanceConfig fields"),
])
def test_yaml_obeys_the_same_limits_as_the_cli(tmp_path, stage, yaml_text, match):
    from meshdream.pipeline.coarse import CoarseConfig
    from meshdream.pipeline.refine import RefineConfig

    p = tmp_path / "c.yaml"
    p.write_text(yaml_text + "\n")
    with pytest.raises(UserInputError, match=match):
        load_config({"coarse": CoarseConfig, "refine": RefineConfig}[stage], p)


def test_non_utf8_config_is_a_usage_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"iters: 5\n# caf\xe9\n")
    with pytest.raises(UserInputError, match=r"is not UTF-8 text"):
        load_config(Outer, p)


def test_cli_ranges_are_the_config_ranges():
    """The CLI's IntRange options and the config layer's limits are the same numbers."""
    from meshdream.cli import cli
    from meshdream.config import limits_of
    from meshdream.pipeline.coarse import CoarseConfig
    from meshdream.pipeline.refine import RefineConfig

    def cli_range(command, option):
        (param,) = [p for p in cli.commands[command].params if p.name == option]
        return param.type.min, param.type.max

    for command, option, cls, name in [("coarse", "iters", CoarseConfig, "iters"), ("coarse", "seed", CoarseConfig, "seed"),
                                       ("refine", "iters", RefineConfig, "iters"), ("refine", "seed", RefineConfig, "seed"),
                                       ("refine", "texture_size", RefineConfig, "texture_size"),
                                       ("generate", "coarse_iters", CoarseConfig, "iters"),
                                       ("generate", "refine_iters", RefineConfig, "iters")]:
        ge, gt, le = limits_of(cls, name)
        assert gt is None and cli_range(command, option) == (ge, le), (command, option)
