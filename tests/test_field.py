"""The coarse field's two kinds: density (DreamFusion blob) and sdf (VolSDF density, eikonal term)."""
import math

import numpy as np
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdream.asset.metrics import topology
from meshdream.nerf.extract import ExtractConfig, extract_mesh
from meshdream.nerf.field import FieldConfig, NeRFField, field_from_state, save_field_state
from meshdream.nerf.field_kinds import eikonal_loss, laplace_density
from meshdream.nerf.hash_grid import HashGridConfig

SMALL_GRID = HashGridConfig(levels=2, log2_table_size=10, base_resolution=4, max_resolution=8)


def sphere_sdf_field(radius: float = 0.5, beta: float = 0.05) -> NeRFField:
    """An sdf field whose MLP outputs zero distance: exactly the start sphere |x| - radius."""
    f = NeRFField(FieldConfig(kind="sdf", hash_grid=SMALL_GRID, hidden=16, sdf_radius=radius, sdf_beta=beta))
    with torch.no_grad():
        last = f.mlp[-1]
        last.weight.zero_()
        last.bias.zero_()
    return f


@given(beta=st.floats(0.005, 0.5), d=st.floats(-3.0, 3.0))
@settings(max_examples=60, deadline=None)
def test_laplace_density_is_volsdf(beta, d):
    """sigma = Psi_beta(-d) / beta: 1/(2 beta) on the surface, 1/beta deep inside, exp decay outside, monotone."""
    s = torch.tensor([d], dtype=torch.float64)
    sigma = float(laplace_density(s, beta))
    cdf = 0.5 * math.exp(-d / beta) if d >= 0 else 1 - 0.5 * math.exp(d / beta)
    assert math.isclose(sigma, cdf / beta, rel_tol=1e-9, abs_tol=1e-300)
    assert float(laplace_density(s + 0.01, beta)) <= sigma  # further out: less dense
    assert math.isclose(float(laplace_density(torch.zeros(1, dtype=torch.float64), beta)), 0.5 / beta)


def test_sdf_field_starts_as_its_sphere_with_unit_gradient():
    f = sphere_sdf_field(radius=0.5)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2000, 3, generator=g) * 2 - 1)
    x = x[x.norm(dim=-1) > 0.1]  # the distance to a sphere has no gradient at its centre
    with torch.no_grad():
        assert torch.allclose(f.sdf(x), x.norm(dim=-1) - 0.5, atol=1e-6)
        assert torch.allclose(f.density(x), laplace_density(x.norm(dim=-1) - 0.5, 0.05))
        n = f.normals(x)
        # outward; the tetrahedron's error is ~ eps * curvature (0.02 / |x| here)
        assert ((n - x / x.norm(dim=-1, keepdim=True)).norm(dim=-1) < 0.03 / x.norm(dim=-1)).all()
        assert float(eikonal_loss(f, x)) < 1e-3
    assert f.surface_density == 10.0


def test_eikonal_loss_trains_the_parameters_through_finite_differences():
    torch.manual_seed(0)
    f = NeRFField(FieldConfig(kind="sdf", hash_grid=SMALL_GRID, hidden=16))
    x = torch.rand(512, 3) * 2 - 1
    loss = eikonal_loss(f, x)
    loss.backward()
    assert float(loss.detach()) > 0
    assert f.encoding.table.grad.abs().sum() > 0 and f.mlp[0].weight.grad.abs().sum() > 0
    # a few steps of the eikonal term alone make the field more of a distance
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    first = float(loss.detach())
    for _ in range(30):
        opt.zero_grad()
        loss = eikonal_loss(f, x)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first


def test_density_kind_normals_unchanged_by_the_sdf_kind():
    """Kind density: normals are -grad(density) normalised, as before the sdf kind existed."""
    torch.manual_seed(0)
    f = NeRFField(FieldConfig(hash_grid=SMALL_GRID, hidden=16))
    x = torch.rand(256, 3) * 1.6 - 0.8
    with torch.no_grad():
        eps = f.config.normal_eps
        k = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
        d = f.density((x[:, None, :] + eps * k).reshape(-1, 3)).view(-1, 4)
        grad = (d[:, :, None] * k).sum(1) / (4 * eps)
        expected = -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        assert torch.equal(f.normals(x), expected)
    assert f.surface_density is None


def test_sdf_field_extracts_at_its_zero_level_and_round_trips():
    f = sphere_sdf_field(radius=0.45)
    cfg = ExtractConfig(resolution=48, coarse_resolution=16, smooth_iterations=0, target_faces=0)
    v, faces, colours = extract_mesh(f, cfg)
    r = np.linalg.norm(v, axis=1)
    assert abs(r.mean() - 0.45) < 0.01  # the zero level, not Otsu's split of the densities
    t = topology(v, faces, weld_seams=False)
    assert t.components == 1 and t.watertight and t.genus == 0
    g = field_from_state(save_field_state(f))
    assert g.config.kind == "sdf"
    x = torch.rand(100, 3)
    with torch.no_grad():
        assert torch.equal(g.sdf(x), f.sdf(x))
    volume = trimesh.Trimesh(v, faces, process=False).volume  # positive: faces wound outwards
    assert abs(volume / (4 / 3 * np.pi * 0.45 ** 3) - 1) < 0.05
