import math

import pytest
import torch

from meshdream.render.cameras import make_cameras
from meshdream.nerf.volume_render import OccupancyGrid, border_opacity_loss, frame_border_opacity, orientation_loss, ray_box, render_cameras, render_rays, sparsity_loss


class ConstantSphere(torch.nn.Module):
    """Density sigma inside a sphere of radius r, 0 outside; albedo a constant colour."""

    def __init__(self, sigma=3.0, r=0.5, colour=(1.0, 0.0, 0.0)):
        super().__init__()
        self.sigma, self.r = sigma, r
        self.colour = torch.tensor(colour)

    def forward(self, x):
        return self.density(x), self.colour.expand(len(x), 3)

    def density(self, x):
        return torch.where(x.norm(dim=-1) < self.r, torch.full_like(x[:, 0], self.sigma), torch.zeros_like(x[:, 0]))

    def normals(self, x):
        return x / x.norm(dim=-1, keepdim=True)


def test_ray_box():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far, hit = ray_box(o, d, 1.0)
    assert hit.tolist() == [True, False]
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))


def test_constant_density_sphere_gives_known_opacity():
    """Opacity along a ray = 1 - exp(-sigma * chord) with chord = 2 sqrt(r^2 - b^2)."""
    f = ConstantSphere(sigma=3.0, r=0.5)
    offsets = torch.tensor([0.0, 0.2, 0.4, 0.6])
    o = torch.stack([offsets, torch.zeros(4), torch.full((4,), 3.0)], -1)
    d = torch.tensor([0.0, 0.0, -1.0]).expand(4, 3)
    out = render_rays(f, o, d, num_samples=2000, bound=1.0, shading="albedo", light_position=o, background=torch.ones(4, 3),
                      with_normals=False)
    chord = 2 * torch.sqrt((0.25 - offsets ** 2).clamp_min(0))
    expected = 1 - torch.exp(-3.0 * chord)
    assert torch.allclose(out.opacity, expected, atol=5e-3)
    # colour = opacity * red + (1 - opacity) * white background
    assert torch.allclose(out.rgb[:, 0], torch.ones(4), atol=1e-5)
    assert torch.allclose(out.rgb[:, 1], 1 - expected, atol=5e-3)
    # expected depth of the hit: front surface (2.5) + mean of an exponential truncated to the chord (1)
    mean = 1 / 3.0 - math.exp(-3.0) / (1 - math.exp(-3.0))
    assert abs(float(out.depth[0] / out.opacity[0]) - (2.5 + mean)) < 0.02


def test_empty_field_gives_background_and_image_layout():
    f = ConstantSphere(sigma=0.0)
    cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([45.0]))
    img, out = render_cameras(f, cams, 8, num_samples=16, bound=1.0, shading="albedo", background=torch.tensor([0.2, 0.4, 0.6]))
    assert img.shape == (1, 3, 8, 8)
    assert torch.allclose(img[0, :, 3, 3], torch.tensor([0.2, 0.4, 0.6]))
    assert torch.allclose(out.opacity, torch.zeros_like(out.opacity))


def test_occupancy_grid_skips_empty_space_without_changing_the_image():
    class Blob(ConstantSphere):
        def density(self, x):  # smooth: cells next to the surface are never sampled as empty
            return 40 * torch.exp(-(x ** 2).sum(-1) / (2 * 0.25 ** 2))

    f = Blob()
    cams = make_cameras(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([2.5]), torch.tensor([45.0]))
    occ = OccupancyGrid(16, 1.0, threshold=0.5)
    occ.update(f.density, torch.Generator().manual_seed(0))
    assert 0 < occ.occupied_fraction < 0.5
    a, out_a = render_cameras(f, cams, 16, num_samples=64, bound=1.0, shading="lambertian", background=torch.ones(3))
    b, out_b = render_cameras(f, cams, 16, num_samples=64, bound=1.0, shading="lambertian", background=torch.ones(3), occupancy=occ)
    assert out_b.evaluated < out_a.evaluated / 2
    assert (a - b).abs().max() < 0.05


def test_regularisers():
    f = ConstantSphere(sigma=20.0)
    o = torch.tensor([[0.0, 0.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0]])
    out = render_rays(f, o, d, num_samples=64, bound=1.0, shading="lambertian", light_position=o, background=torch.ones(1, 3))
    assert orientation_loss(out) < 1e-3  # visible normals face the camera
    out.normals = -out.normals
    assert orientation_loss(out) > 0.5
    assert math.isclose(float(sparsity_loss(out)), math.sqrt(float(out.opacity) ** 2 + 0.01), rel_tol=1e-5)


def test_border_opacity_loss_sees_only_the_ring():
    opacity = torch.zeros(2, 16, 16)
    opacity[:, 2:-2, 2:-2] = 1.0  # an object inside the frame: no penalty however opaque
    assert float(border_opacity_loss(opacity, 2)) == 0.0
    opacity = torch.rand(2, 16, 16, requires_grad=True)
    loss = border_opacity_loss(opacity, 2)
    ring = torch.ones(16, 16, dtype=torch.bool)
    ring[2:-2, 2:-2] = False
    assert math.isclose(float(loss.detach()), float(opacity.detach()[:, ring].mean()), rel_tol=1e-5)
    loss.backward()
    assert (opacity.grad[:, ~ring] == 0).all() and (opacity.grad[:, ring] > 0).all()
    # width 1 is the ring the frame-fill check reads
    full = torch.ones(3, 8, 8)
    assert float(border_opacity_loss(full, 1)) == frame_border_opacity(full) == 1.0


@pytest.mark.parametrize("weight", [0.0, 1.0], ids=["without", "with"])
def test_border_term_pulls_a_frame_filling_field_back_inside_the_frame(weight):
    """The coarse stage's border term on a real sdf field: a start sphere wider than the frame shrinks
    away from the views' edges, while a term standing in for SDS (which wants an object) keeps the middle
    of the frame opaque. Without the border term the field keeps filling the frame."""
    from meshdream.render.cameras import CameraConfig, sample_cameras, turntable_cameras
    from meshdream.nerf.field import FieldConfig, NeRFField
    from meshdream.nerf.hash_grid import HashGridConfig

    torch.manual_seed(0)
    field_ = NeRFField(FieldConfig(kind="sdf", sdf_radius=1.0, hash_grid=HashGridConfig(levels=2, max_resolution=16)))
    views = turntable_cameras(4, elevation_deg=45.0)

    def border_and_middle():
        with torch.no_grad():
            _, out = render_cameras(field_, views, 16, num_samples=24, bound=1.0, shading="albedo", background=torch.ones(3),
                                    with_normals=False)
        opacity = out.opacity.view(4, 16, 16)
        return frame_border_opacity(opacity), float(opacity[:, 6:10, 6:10].mean())

    border0, middle0 = border_and_middle()
    assert border0 > 0.5 and middle0 > 0.99  # fills the frame
    optimizer = torch.optim.Adam(field_.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        cams = sample_cameras(2, CameraConfig(elevation_range=(40.0, 60.0)), g)
        _, out = render_cameras(field_, cams, 16, num_samples=24, bound=1.0, shading="albedo", background=torch.ones(3),
                                generator=g, with_normals=False)
        opacity = out.opacity.view(2, 16, 16)
        optimizer.zero_grad()
        (weight * border_opacity_loss(opacity, 2) + (1 - opacity[:, 6:10, 6:10]).mean()).backward()
        optimizer.step()
    border1, middle1 = border_and_middle()
    assert middle1 > 0.99
    if weight:
        assert border1 < 0.5 * border0, (border0, border1)
    else:
        assert border1 > 0.9 * border0, (border0, border1)
