"""Shading (meshdream/render/shading.py) and its use by both renderers: albedo, lambertian, textureless."""
import math

import pytest
import torch

from meshdream.render.cameras import make_cameras
from meshdream.render.shading import ShadingConfig, shade, shading_for_step


def _points():
    """Three surface points facing +z, lit from straight above, at 60 degrees and from behind."""
    normal = torch.tensor([[0.0, 0.0, 1.0]]).expand(3, 3)
    point = torch.zeros(3, 3)
    light = torch.tensor([[0.0, 0.0, 2.0], [math.sin(math.pi / 3), 0.0, math.cos(math.pi / 3)], [0.0, 0.0, -1.0]])
    return normal, point, light


def test_lambertian_is_albedo_times_ambient_plus_diffuse_cosine():
    normal, point, light = _points()
    albedo = torch.tensor([[0.8, 0.2, 0.1]]).expand(3, 3)
    out = shade(albedo, normal, point, light, "lambertian", ambient=0.3, diffuse=0.7)
    cosine = torch.tensor([1.0, 0.5, 0.0])[:, None]  # facing the light, at 60 degrees, facing away (clamped to 0)
    assert torch.allclose(out, albedo * (0.3 + 0.7 * cosine))
    assert torch.equal(shade(albedo, normal, point, light, "albedo"), albedo)


def test_textureless_ignores_the_albedo():
    """textureless = white albedo, lit: the same for every albedo, grey, and equal to lambertian of white."""
    normal, point, light = _points()
    red, green = torch.tensor([[0.9, 0.1, 0.1]]).expand(3, 3), torch.tensor([[0.1, 0.7, 0.2]]).expand(3, 3)
    a = shade(red, normal, point, light, "textureless", ambient=0.25, diffuse=0.6)
    assert torch.equal(a, shade(green, normal, point, light, "textureless", ambient=0.25, diffuse=0.6))
    assert torch.allclose(a, shade(torch.ones(3, 3), normal, point, light, "lambertian", ambient=0.25, diffuse=0.6))
    assert torch.allclose(a[:, 0], torch.tensor([0.85, 0.55, 0.25]))
    with pytest.raises(ValueError, match="'toon'.*albedo, lambertian, textureless"):
        shade(red, normal, point, light, "toon")


def test_volume_render_textureless_shows_geometry_only():
    """The NeRF renderer in textureless mode: the red sphere is drawn grey, lit like a white one."""
    from test_volume_render import ConstantSphere
    from meshdream.nerf.volume_render import render_cameras

    cams = make_cameras(torch.tensor([0.0]), torch.tensor([20.0]), torch.tensor([2.5]), torch.tensor([45.0]))
    kw = dict(num_samples=48, bound=1.0, background=torch.ones(3), with_normals=False)
    grey, out = render_cameras(ConstantSphere(sigma=50.0, colour=(0.9, 0.1, 0.1)), cams, 16, shading="textureless", **kw)
    white, _ = render_cameras(ConstantSphere(sigma=50.0, colour=(1.0, 1.0, 1.0)), cams, 16, shading="lambertian", **kw)
    red, _ = render_cameras(ConstantSphere(sigma=50.0, colour=(0.9, 0.1, 0.1)), cams, 16, shading="lambertian", **kw)
    solid = out.opacity.view(16, 16) > 0.99
    assert solid.sum() > 20
    assert torch.allclose(grey, white, atol=1e-6)
    assert (grey[0, 0] - grey[0, 1]).abs().max() < 1e-6 and (red[0, 0] - red[0, 1])[solid].min() > 0.2


def test_mesh_render_textureless_shows_geometry_only():
    """The mesh renderer in textureless mode: a red-textured box equals the white-textured one, lit."""
    import trimesh

    import meshdream.raster as dr
    from meshdream.render.mesh_render import render_mesh

    box = trimesh.creation.box((0.8, 0.8, 0.8))
    v, f = torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)
    uvs = torch.full((len(v), 2), 0.5)
    cams = make_cameras(torch.tensor([30.0]), torch.tensor([25.0]), torch.tensor([2.5]), torch.tensor([45.0]))
    ctx = dr.get_context("cpu")
    red, white = torch.tensor([0.9, 0.1, 0.1]).expand(4, 4, 3), torch.ones(4, 4, 3)
    grey, cover = render_mesh(ctx, v, f, uvs, red, cams, 24, "textureless")
    lit_white, _ = render_mesh(ctx, v, f, uvs, white, cams, 24, "lambertian")
    lit_red, _ = render_mesh(ctx, v, f, uvs, red, cams, 24, "lambertian")
    assert cover.sum() > 50
    assert torch.allclose(grey, lit_white, atol=1e-6) and not torch.allclose(grey, lit_red, atol=0.1)


def test_shading_schedule_albedo_first_then_the_configured_odds():
    cfg = ShadingConfig(albedo=0.0, lambertian=0.0, textureless=1.0, albedo_only_steps=3)
    g = torch.Generator().manual_seed(0)
    assert [shading_for_step(cfg, s, g) for s in range(6)] == ["albedo"] * 3 + ["textureless"] * 3
    cfg = ShadingConfig(albedo=1.0, lambertian=3.0, textureless=0.0, albedo_only_steps=0)
    modes = [shading_for_step(cfg, s, g) for s in range(4000)]
    assert set(modes) == {"albedo", "lambertian"} and abs(modes.count("lambertian") / 4000 - 0.75) < 0.03
