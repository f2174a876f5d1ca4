import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdream.render.cameras import (CameraConfig, make_cameras, orbit_position, sample_cameras, turntable_cameras,
                               view_label, view_prompt)


def test_sampler_ranges_and_determinism():
    cfg = CameraConfig()
    a = sample_cameras(256, cfg, torch.Generator().manual_seed(0))
    b = sample_cameras(256, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a.c2w, b.c2w) and torch.equal(a.light_position, b.light_position)
    assert a.elevation.min() >= -10 - 1e-4 and a.elevation.max() <= 45 + 1e-4
    assert a.azimuth.min() >= -180 and a.azimuth.max() <= 180
    fov = torch.rad2deg(a.fov_y)
    assert fov.min() >= 40 - 1e-4 and fov.max() <= 55 + 1e-4
    d = a.position.norm(dim=-1)
    assert torch.allclose(d, a.distance, atol=1e-5)


def test_camera_looks_at_origin_and_centre_ray_hits_it():
    cams = make_cameras(torch.tensor([0.0, 90.0, -135.0]), torch.tensor([0.0, 30.0, -5.0]), torch.tensor([2.5, 2.0, 3.0]),
                        torch.tensor([45.0, 45.0, 45.0]))
    o, d = cams.rays(3, 3)
    centre = o[:, 1, 1] + d[:, 1, 1] * cams.distance[:, None]
    assert torch.allclose(centre, torch.zeros(3, 3), atol=1e-5)
    # azimuth 0 sits on +Z (the front), azimuth 90 on +X
    assert torch.allclose(cams.position[0], torch.tensor([0.0, 0.0, 2.5]), atol=1e-5)
    assert cams.position[1, 0] > 0
    # row 0 is the top of the image: its rays point up more than the bottom row's
    assert (d[:, 0, 1, 1] > d[:, 2, 1, 1]).all()


def test_mvp_projects_origin_to_centre_and_up_to_top():
    cams = turntable_cameras(4)
    mvp = cams.mvp()
    p = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0]])
    clip = torch.einsum("bij,nj->bni", mvp, p)
    ndc = clip[..., :3] / clip[..., 3:]
    assert torch.allclose(ndc[:, 0, :2], torch.zeros(4, 2), atol=1e-5)
    assert (ndc[:, 1, 1] > 0).all()  # +Y world is up in clip space
    assert ((ndc[:, :, 2] > -1) & (ndc[:, :, 2] < 1)).all()


@settings(max_examples=50, deadline=None)
@given(st.floats(-180, 180), st.floats(-80, 80), st.floats(0.5, 5), st.floats(20, 80))
def test_rays_match_projection(az, el, dist, fov):
    """A point along any pixel's ray projects back to that pixel's centre."""
    cams = make_cameras(torch.tensor([az]), torch.tensor([el]), torch.tensor([dist]), torch.tensor([fov]))
    H, W = 4, 6
    o, d = cams.rays(H, W)
    pts = o + d * 1.7
    clip = torch.einsum("ij,hwj->hwi", cams.mvp(aspect=W / H)[0], torch.cat([pts[0], torch.ones(H, W, 1)], -1))
    ndc = clip[..., :2] / clip[..., 3:]
    xs = (torch.arange(W) + 0.5) / W * 2 - 1
    ys = 1 - (torch.arange(H) + 0.5) / H * 2
    assert torch.allclose(ndc[..., 0], xs.expand(H, W), atol=1e-4)
    assert torch.allclose(ndc[..., 1], ys[:, None].expand(H, W), atol=1e-4)


def test_view_labels():
    assert view_label(0, 10) == "front"
    assert view_label(44, 0) == "front"
    assert view_label(90, 0) == "side" and view_label(-100, 0) == "side"
    assert view_label(180, 0) == "back" and view_label(-170, 20) == "back"
    assert view_label(0, 70) == "overhead"
    assert view_prompt("a red cube", "side") == "a red cube, side view"


def test_orbit_position_elevation():
    p = orbit_position(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([2.0]))
    assert torch.allclose(p, torch.tensor([[0.0, 2.0, 0.0]]), atol=1e-5)
    assert math.isclose(float(p.norm()), 2.0, rel_tol=1e-6)
