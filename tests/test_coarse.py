import pytest
import torch
import trimesh
from click.testing import CliRunner

from meshdream.render.cameras import CameraConfig
from meshdream.engine.checkpoint import load_checkpoint
from meshdream.cli import cli
from meshdream.config import load_config, to_dict
from meshdream.errors import UserInputError
from meshdream.stages.coarse import CoarseConfig, coarse
from meshdream.engine.stage_loop import step_hook


def test_default_config_matches_configs_yaml():
    assert to_dict(load_config(CoarseConfig, "configs/coarse.yaml")) == to_dict(CoarseConfig())


@pytest.mark.parametrize("preset", ["configs/coarse-sd.yaml", "configs/coarse-if.yaml"])
def test_gpu_presets_load(preset):
    cfg = load_config(CoarseConfig, preset)
    assert cfg.guidance.name in ("stable-diffusion", "deepfloyd-if")


def test_coarse_run_writes_mesh_field_and_config(coarse_run):
    mesh = trimesh.load(coarse_run / "coarse" / "mesh.ply", process=False)
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    field_state = load_checkpoint(coarse_run / "coarse" / "field.pt")
    assert field_state["prompt"] == "a red cube"
    ck = load_checkpoint(coarse_run / "coarse" / "checkpoint.pt")
    assert ck["done"] and ck["step"] == 6 and ck["config"]["iters"] == 6
    from meshdream.nerf.field import load_field

    f = load_field(coarse_run / "coarse" / "field.pt")
    x = torch.zeros(3, 3)
    assert f.density(x).shape == (3,) and f.albedo(x).shape == (3, 3)
    assert (coarse_run / "coarse" / "previews" / "final.png").is_file()


class _Killed(Exception):
    pass


def die_after(stage_name: str, steps: int):
    """A step hook that "kills" the run once ``stage_name`` has done ``steps`` steps."""

    def hook(stage: str, done: int) -> None:
        if stage == stage_name and done == steps:
            raise _Killed()

    return step_hook(hook)


def test_resume_after_a_kill_ends_with_the_same_parameters(tmp_path, tiny_configs):
    coarse("a red cube", tmp_path / "full", config=tiny_configs["coarse"], progress=False)
    full = load_checkpoint(tmp_path / "full" / "coarse" / "field.pt")["field"]["state"]

    with die_after("coarse", 5), pytest.raises(_Killed):  # fault injection: the process "dies" after its 5th step
        coarse("a red cube", tmp_path / "resumed", config=tiny_configs["coarse"], progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "coarse" / "checkpoint.pt")["step"] == 4
    coarse("a red cube", tmp_path / "resumed", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "resumed" / "coarse" / "field.pt")["field"]["state"]
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_step_hook_sees_every_step(tmp_path, tiny_configs):
    seen = []
    with step_hook(lambda stage, done: seen.append((stage, done))):
        coarse("a red cube", tmp_path / "run", config=tiny_configs["coarse"], progress=False)
    assert seen == [("coarse", n) for n in range(1, 7)]


def test_resume_applies_safe_settings_and_refuses_the_rest(tmp_path, tiny_configs):
    with die_after("coarse", 3), pytest.raises(_Killed):
        coarse("a red cube", tmp_path / "run", config=tiny_configs["coarse"], progress=False)
    with pytest.raises(UserInputError, match=r"cannot change while resuming: guidance.name: .* -> 'embedded'; seed: 0 -> 7"):
        coarse("a red cube", tmp_path / "run", config=tiny_configs["coarse"], seed=7, guidance="embedded", iters=8,
               resume=True, progress=False)
    changed = tmp_path / "changed.yaml"  # the advice a failed run gives: a copy of RUN/coarse/config.yaml, lr lowered
    changed.write_text((tmp_path / "run" / "coarse" / "config.yaml").read_text().replace("lr: 0.005", "lr: 0.001"))
    coarse("a red cube", tmp_path / "run", config=str(changed), iters=8, resume=True, progress=False)
    ck = load_checkpoint(tmp_path / "run" / "coarse" / "checkpoint.pt")
    assert ck["step"] == 8 and ck["config"]["iters"] == 8 and ck["config"]["lr"] == 0.001 and ck["config"]["seed"] == 0
    assert ck["optimizer"]["param_groups"][0]["lr"] == 0.001  # applied to the optimiser, not only recorded


def test_resume_of_a_finished_run_returns_its_mesh(coarse_run):
    assert coarse("a red cube", coarse_run, resume=True, progress=False) == coarse_run / "coarse" / "mesh.ply"


def test_resume_with_another_prompt_is_refused(coarse_run):
    with pytest.raises(UserInputError, match="made for the prompt 'a red cube'"):
        coarse("a blue sphere", coarse_run, resume=True, progress=False)


def test_cli_bad_inputs(tmp_path, tiny_configs):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 5\n")
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "r"), "--config", str(bad)])
    assert r.exit_code == 2 and "unknown config key iterations" in r.output and "iters" in r.output
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "missing"), "--resume"])
    assert r.exit_code == 2 and "checkpoint.pt" in r.output and "does not exist" in r.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(blocker / "run"), "--config", tiny_configs["coarse"]])
    assert r.exit_code == 2 and "not writable" in r.output
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "r2"), "--config", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "does not exist" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_empty_surface_is_a_clear_error(tmp_path, tiny_configs):
    import yaml

    cfg = yaml.safe_load(open(tiny_configs["coarse"]))
    cfg["extract"]["threshold"] = 1e6
    cfg["iters"] = 1
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "r"), "--config", str(path), "--quiet"])
    assert r.exit_code == 1 and "threshold 1000000.0" in r.output and "Traceback" not in r.output
    assert "--resume --config COPY" in r.output
    # what the message says works: a lower threshold extracts again from the kept field, with no training step
    copy = tmp_path / "copy.yaml"
    copy.write_text((tmp_path / "r" / "coarse" / "config.yaml").read_text().replace("threshold: 1000000.0", "threshold: 0.5"))
    steps = []
    with step_hook(lambda stage, done: steps.append(done)):
        r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "r"), "--resume", "--config", str(copy),
                                     "--quiet"])
    assert r.exit_code == 0 and steps == [] and (tmp_path / "r" / "coarse" / "mesh.ply").is_file(), r.output


@pytest.mark.parametrize("start", [{"kind": "sdf", "sdf_radius": 3.0}, {"kind": "density", "blob_scale": 50.0, "blob_std": 3.0}],
                         ids=["sdf", "density"])
def test_field_filling_the_frame_starts_over_with_the_next_seed_then_stops(tmp_path, tiny_configs, capsys, start):
    from meshdream.config import merge
    from meshdream.errors import MeshdreamError

    # a start sphere / blob wider than the box: every view's border is opaque from step 1 on
    cfg = merge(load_config(CoarseConfig, tiny_configs["coarse"]),
                {"nerf": start, "collapse_check_every": 1, "restarts": 1, "iters": 3, "seed": 7})
    setting = "nerf.sdf_radius" if start["kind"] == "sdf" else "nerf.blob_scale"  # the start the field has
    with pytest.raises(MeshdreamError, match=rf"at step 1 the field fills the frame.*every seed tried \(7, 8\).*{setting}"):
        coarse("a red cube", tmp_path / "run", config=cfg, progress=False)
    assert "starting over with seed 8 (1 of 1 restarts)" in capsys.readouterr().out
    assert not (tmp_path / "run" / "coarse" / "mesh.ply").exists()  # nothing handed on to refine


def test_sdf_field_anneals_beta_resumes_bit_exactly_and_saves_the_sharp_surface(tmp_path, tiny_configs):
    """nerf.kind sdf: eikonal and normal-smoothness terms train, beta shrinks from sdf_beta_start to
    nerf.sdf_beta, the saved field describes the final surface, and a killed run resumes to the same field."""
    from meshdream.config import merge
    from meshdream.nerf.field import load_field

    cfg = merge(load_config(CoarseConfig, tiny_configs["coarse"]),
                {"nerf": {"kind": "sdf", "sdf_beta": 0.05}, "sdf_beta_start": 0.3, "eikonal_weight": (0.1, 1.0),
                 "normal_smooth_weight": (0.0, 1.0), "eikonal_points": 256})
    betas = []
    import meshdream.nerf.field_kinds as kinds_module

    real = kinds_module.laplace_density

    def spy(sdf, beta):
        betas.append(beta)
        return real(sdf, beta)

    kinds_module.laplace_density = spy
    try:
        coarse("a red cube", tmp_path / "full", config=cfg, progress=False)
    finally:
        kinds_module.laplace_density = real
    assert max(betas) == pytest.approx(0.3) and min(betas) == pytest.approx(0.05)
    f = load_field(tmp_path / "full" / "coarse" / "field.pt")
    assert f.kind.name == "sdf" and f.beta == 0.05 and f.surface_density == pytest.approx(10.0)
    assert trimesh.load(tmp_path / "full" / "coarse" / "mesh.ply", process=False).is_watertight
    full = load_checkpoint(tmp_path / "full" / "coarse" / "field.pt")["field"]["state"]

    with die_after("coarse", 3), pytest.raises(_Killed):
        coarse("a red cube", tmp_path / "resumed", config=cfg, progress=False)
    coarse("a red cube", tmp_path / "resumed", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "resumed" / "coarse" / "field.pt")["field"]["state"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_progressive_elevation_widens_to_the_camera_range():
    from meshdream.stages.coarse import cameras_at

    cfg = CoarseConfig()
    assert cameras_at(cfg, 0.3) is cfg.cameras  # off by default
    cfg = CoarseConfig(elevation_start=(30.0, 45.0), elevation_until=0.5, cameras=CameraConfig(elevation_range=(-10.0, 45.0)))
    assert cameras_at(cfg, 0.0).elevation_range == (30.0, 45.0)
    assert cameras_at(cfg, 0.25).elevation_range == pytest.approx((10.0, 45.0))
    assert cameras_at(cfg, 0.5).elevation_range == (-10.0, 45.0) == cameras_at(cfg, 0.9).elevation_range
    assert cameras_at(cfg, 0.25).distance_range == cfg.cameras.distance_range  # only the elevation changes


def test_training_renders_are_lit_after_the_albedo_only_steps(tmp_path, tiny_configs, monkeypatch):
    """The loop renders albedo only for shading.albedo_only_steps, then by the configured odds: lit
    (lambertian) and geometry-only (textureless) renders reach SDS."""
    from meshdream.stages import coarse as coarse_mod

    modes, real = [], coarse_mod.render_cameras

    def recording(*args, **kwargs):
        if torch.is_grad_enabled():  # the training renders (previews and frame checks render without gradients)
            modes.append(kwargs["shading"])
        return real(*args, **kwargs)

    monkeypatch.setattr(coarse_mod, "render_cameras", recording)
    coarse("a red cube", tmp_path / "run", config=tiny_configs["coarse"], progress=False, overrides={
        "iters": 8, "shading.albedo_only_steps": 3, "shading.albedo": 0.0, "shading.lambertian": 1.0, "shading.textureless": 1.0})
    assert modes[:3] == ["albedo"] * 3 and len(modes) == 8
    assert set(modes[3:]) == {"lambertian", "textureless"}
