import pytest

from meshdream.errors import UserInputError
from meshdream.config import to_dict
from meshdream.stages.coarse import CoarseConfig
from meshdream.stages.refine import RefineConfig
from meshdream.engine.resume import changed_settings, is_safe, resume_config


def test_safe_changes_are_applied():
    saved = to_dict(CoarseConfig(iters=10))
    cfg = resume_config(CoarseConfig, saved, None, {"iters": 20}, "RUN/coarse/checkpoint.pt")
    assert cfg.iters == 20 and cfg.lr == CoarseConfig().lr
    cfg = resume_config(CoarseConfig, saved, CoarseConfig(iters=20, lr=0.001), {}, "RUN/coarse/checkpoint.pt")
    assert cfg.iters == 20 and cfg.lr == 0.001


def test_a_config_given_again_applies_safe_changes_and_refuses_the_rest(tmp_path):
    saved = to_dict(RefineConfig(iters=10))
    path = tmp_path / "r.yaml"
    path.write_text("iters: 30\nlr_texture: 0.001\nguidance: {guidance_scale: 3}\n")
    cfg = resume_config(RefineConfig, saved, str(path), {}, "ck")
    assert (cfg.iters, cfg.lr_texture, cfg.guidance.guidance_scale) == (30, 0.001, 3.0)
    path.write_text("iters: 30\ntexture_size: 64\nseed: 5\n")
    with pytest.raises(UserInputError, match=r"cannot change while resuming: seed: 0 -> 5; texture_size: 256 -> 64"):
        resume_config(RefineConfig, saved, str(path), {}, "ck")


def test_overrides_equal_to_the_saved_ones_are_fine():
    saved = to_dict(RefineConfig(seed=3, texture_size=64))
    cfg = resume_config(RefineConfig, saved, None, {"seed": 3, "texture_size": 64, "iters": None}, "ck")
    assert cfg == RefineConfig(seed=3, texture_size=64)
    with pytest.raises(UserInputError, match=r"guidance.name: 'embedded' -> 'x'"):
        resume_config(RefineConfig, saved, None, {"guidance": {"name": "x"}}, "ck")


def test_what_is_safe():
    assert is_safe("iters") and is_safe("extract.threshold") and is_safe("guidance.guidance_scale")
    assert not is_safe("seed") and not is_safe("nerf.hidden") and not is_safe("guidance.name") and not is_safe("texture_size")
    assert changed_settings(CoarseConfig(), CoarseConfig(lr=1.0)) == {"lr": (CoarseConfig().lr, 1.0)}
