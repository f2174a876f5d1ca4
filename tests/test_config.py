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
    from meshdream.stages.coarse import CoarseConfig
    from meshdream.stages.refine import RefineConfig

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
    from meshdream.stages.coarse import CoarseConfig
    from meshdream.stages.refine import RefineConfig

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

# ---- presets, extends and KEY=VALUE overrides --------------------------------------------------

from meshdream.config import build_config, config_keys, parse_overrides, preset_data, preset_names, route_overrides  # noqa: E402
from meshdream.stages.coarse import CoarseConfig  # noqa: E402
from meshdream.stages.refine import RefineConfig  # noqa: E402


def test_presets_are_shipped_and_if_extends_sd():
    assert {"sd", "if"} <= set(preset_names())
    sd, if_ = preset_data("sd", "coarse"), preset_data("if", "coarse")
    assert if_["guidance"]["name"] == "deepfloyd-if" and sd["guidance"]["name"] == "stable-diffusion"
    assert if_["nerf"] == sd["nerf"] and if_["iters"] == sd["iters"]  # inherited, not repeated
    assert preset_data("if", "refine") == preset_data("sd", "refine")
    cfg = build_config(CoarseConfig, preset="if")
    assert cfg.guidance.name == "deepfloyd-if" and cfg.nerf.hash_grid.levels == 16 and cfg.guidance.guidance_scale == 20.0
    with pytest.raises(UserInputError, match="unknown preset 'xl'; choose one of .*sd"):
        build_config(CoarseConfig, preset="xl")


def test_sd_refine_keeps_small_noise_and_sparse_checkpoints():
    """Refining a mesh samples t only up to 0.5 all run long (Magic3D / threestudio's refine stage: t in
    [0.02, 0.5]); a refine checkpoint of this preset comes every 500 steps. Through both presets and the
    configs/ file that extends sd."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for cfg in (build_config(RefineConfig, preset="sd"), build_config(RefineConfig, preset="if"),
                load_config(RefineConfig, root / "configs" / "refine-sd.yaml")):
        assert (cfg.guidance.t_max, cfg.guidance.t_max_end) == (0.5, 0.5)
        assert cfg.checkpoint_every == 500


def test_config_file_can_extend_a_preset_or_a_file(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: sd\niters: 7\n")
    (tmp_path / "mine.yaml").write_text("extends: base.yaml\nlr: 0.02\n")
    cfg = load_config(CoarseConfig, tmp_path / "mine.yaml")
    assert (cfg.iters, cfg.lr, cfg.guidance.name, cfg.resolution) == (7, 0.02, "stable-diffusion", 64)
    assert load_config(RefineConfig, tmp_path / "base.yaml").resolution == 512  # the refine section of sd
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(UserInputError, match="extends itself"):
        load_config(CoarseConfig, tmp_path / "loop.yaml")


def test_dotted_overrides_are_typed_and_checked():
    assert parse_overrides(["iters=10", "guidance.guidance_scale=50", "background=[0, 0, 0]", "resolution=null",
                            "guidance.name=stable-diffusion"]) == {
        "iters": 10, "guidance": {"guidance_scale": 50, "name": "stable-diffusion"}, "background": [0, 0, 0], "resolution": None}
    cfg = build_config(CoarseConfig, None, "sd", ["iters=10", "nerf.hash_grid.levels=8", "resolution=null"])
    assert cfg.iters == 10 and cfg.nerf.hash_grid.levels == 8 and cfg.resolution is None and cfg.guidance.guidance_scale == 100.0
    assert isinstance(build_config(CoarseConfig, overrides=["lr=1"]).lr, float)
    with pytest.raises(UserInputError, match=r"unknown config key guidance\.scale; allowed keys in guidance: .*guidance_scale"):
        build_config(CoarseConfig, overrides=["guidance.scale=5"])
    with pytest.raises(UserInputError, match="unknown config key nerf_levels; allowed keys: .*iters"):
        build_config(CoarseConfig, overrides=["nerf_levels=5"])
    with pytest.raises(UserInputError, match="iters: expected an integer, got 'many'"):
        build_config(CoarseConfig, overrides=["iters=many"])
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        parse_overrides(["iters"])
    assert build_config(CoarseConfig) is None


def test_generate_routes_overrides_to_the_stages_that_have_them():
    routed = route_overrides(["iters=5", "coarse.lr=0.1", "refine.texture_size=64", "nerf.hidden=8"],
                             {"coarse": CoarseConfig, "refine": RefineConfig})
    assert routed == {"coarse": {"iters": 5, "lr": 0.1, "nerf": {"hidden": 8}}, "refine": {"iters": 5, "texture_size": 64}}
    with pytest.raises(UserInputError, match="unknown config key wings; allowed keys: .*texture_size"):
        route_overrides(["wings=2"], {"coarse": CoarseConfig, "refine": RefineConfig})
    assert "guidance.guidance_scale" in config_keys(CoarseConfig) and "nerf.hash_grid.levels" in config_keys(CoarseConfig)
