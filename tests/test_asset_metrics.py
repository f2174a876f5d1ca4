"""Asset metrics on meshes whose answers are known: topology, alignment + Chamfer, GLB round trip, renders."""
import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdream.asset.metrics import (
    contact_sheet,
    cube_rotations,
    fit_primitive,
    load_glb,
    primitive_mesh,
    primitive_project,
    render_asset,
    rotation_matrix,
    topology,
    umeyama,
)
from meshdream.asset.model import Asset
from meshdream.mesh.geometry import weld
from meshdream.render.cameras import turntable_cameras


def icosphere():
    m = trimesh.creation.icosphere(subdivisions=2)
    return np.asarray(m.vertices), np.asarray(m.faces)


def test_icosphere_is_one_watertight_genus_0_part():
    t = topology(*icosphere())
    assert (t.components, t.boundary_edges, t.non_manifold_edges, t.euler, t.genus) == (1, 0, 0, 2, 0)
    assert t.watertight and t.oriented


def test_torus_has_genus_1():
    m = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    t = topology(m.vertices, m.faces)
    assert t.watertight and t.components == 1 and t.euler == 0 and t.genus == 1


def test_a_hole_gives_boundary_edges_and_a_loop():
    v, f = icosphere()
    t = topology(v, f[1:])
    assert not t.watertight
    assert (t.boundary_edges, t.boundary_loops, t.genus) == (3, 1, 0)


def test_two_parts_are_two_components():
    v, f = icosphere()
    t = topology(np.concatenate([v, v + 3.0]), np.concatenate([f, f + len(v)]))
    assert t.components == 2 and t.watertight and t.euler == 4 and t.genus == 0


def test_an_edge_in_three_faces_is_non_manifold():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], float)
    f = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    t = topology(v, f)
    assert t.non_manifold_edges == 1 and not t.watertight and t.genus is None


def test_flipped_face_is_not_oriented():
    v, f = icosphere()
    f = f.copy()
    f[0] = f[0, ::-1]
    t = topology(v, f)
    assert t.watertight and not t.oriented


def test_uv_split_mesh_welds_back():
    """xatlas splits vertices along UV seams: unwelded, the seams are boundaries; welded, a closed sphere."""
    from meshdream.mesh.uv import unwrap

    v, f = icosphere()
    uv = unwrap(v.astype(np.float32), f, resolution=128)
    split_v = v.astype(np.float32)[uv.vmapping]
    assert len(split_v) > len(v)
    raw = topology(split_v, uv.faces, weld_seams=False)
    assert raw.boundary_edges > 0
    welded = topology(split_v, uv.faces)
    assert welded.watertight and welded.components == 1 and welded.genus == 0
    wv, wf, index = weld(split_v, uv.faces)
    assert len(wv) == len(v) and np.array_equal(wv[index], split_v.astype(np.float64))


@settings(max_examples=15, deadline=None)
@given(st.floats(0.1, 10), st.floats(-np.pi, np.pi), st.integers(0, 2 ** 31 - 1))
def test_topology_is_invariant_under_similarity_and_relabelling(scale, angle, seed):
    m = trimesh.creation.torus(major_radius=1.0, minor_radius=0.4, major_sections=16, minor_sections=8)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(m.vertices))
    inv = np.argsort(perm)
    v = scale * m.vertices[perm] @ rotation_matrix(rng.normal(size=3), angle).T + rng.normal(size=3)
    t = topology(v, inv[m.faces])
    assert t.watertight and t.components == 1 and t.genus == 1


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 20), st.integers(0, 2 ** 31 - 1))
def test_umeyama_recovers_a_similarity(scale, seed):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(30, 3))
    R = rotation_matrix(rng.normal(size=3), rng.uniform(-np.pi, np.pi))
    t = rng.normal(size=3) * 5
    sim = umeyama(src, scale * src @ R.T + t)
    assert sim.scale == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(sim.rotation, R, atol=1e-6)
    np.testing.assert_allclose(sim.apply(src), scale * src @ R.T + t, atol=1e-6 * max(1, scale))


def test_cube_rotations_are_the_24_proper_ones():
    Rs = cube_rotations()
    assert Rs.shape == (24, 3, 3)
    assert np.allclose(np.linalg.det(Rs), 1)
    assert len({tuple(R.round().astype(int).ravel()) for R in Rs}) == 24


@pytest.mark.parametrize("shape", ["cube", "torus", "cone"])
def test_primitive_projection_lands_on_the_surface(shape):
    pts = np.random.default_rng(0).uniform(-1, 1, size=(500, 3))
    closest, normals, dist = primitive_project(shape, pts)
    _, _, again = primitive_project(shape, closest)
    assert np.abs(again).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("shape,angle,scale", [("cube", 0.9, 1.7), ("torus", 2.5, 0.4), ("cone", -1.2, 2.3)])
def test_chamfer_of_a_moved_copy_is_near_zero_after_alignment(shape, angle, scale):
    v, f = primitive_mesh(shape, 64)
    R = rotation_matrix([1.0, 2.0, -0.5], angle)
    moved = scale * v @ R.T + np.array([0.4, -0.3, 1.1])
    fit = fit_primitive(moved, f, shape)
    assert fit.chamfer < 0.3  # % of the diagonal: marching cubes at 64^3 and sampling, nothing else
    assert fit.normal_deviation < 5
    assert fit.similarity.scale == pytest.approx(1 / scale, rel=0.02)


def test_chamfer_separates_shapes():
    v, f = primitive_mesh("cube", 48)
    same = fit_primitive(v, f, "cube")
    other = fit_primitive(v, f, "sphere")
    assert other.chamfer > 10 * same.chamfer and other.chamfer > 2


def _write_textured_sphere(path, texture):
    from meshdream.stages.export import Asset, write_asset
    from meshdream.mesh.uv import unwrap

    v, f = icosphere()
    v = (0.7 * v).astype(np.float32)
    uv = unwrap(v, f, resolution=texture.shape[0])
    asset = Asset(v[uv.vmapping], uv.faces, uvs=uv.uvs, texture=texture)
    write_asset(asset, path, "glb")
    return asset


def test_glb_round_trip_keeps_geometry_uvs_and_texture_orientation(tmp_path):
    from meshdream.stages.export import sample_texture

    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32] = (255, 0, 0)  # PNG top half (v > 0.5) red, bottom blue
    texture[32:] = (0, 0, 255)
    asset = _write_textured_sphere(tmp_path / "m.glb", texture)
    loaded = load_glb(tmp_path / "m.glb")
    np.testing.assert_allclose(loaded.vertices, asset.vertices, atol=1e-6)
    assert np.array_equal(loaded.faces, asset.faces)
    expected = sample_texture(asset.texture, asset.uvs) / 255.0
    # the loaded texture is in PNG orientation (row 0 = v 1), as the asset's: look up the same uvs that way
    T = loaded.texture.shape[0]
    rows = np.clip(((1 - loaded.uvs[:, 1]) * T - 0.5).round().astype(int), 0, T - 1)
    cols = np.clip((loaded.uvs[:, 0] * T - 0.5).round().astype(int), 0, T - 1)
    got = loaded.texture[rows, cols] / 255.0
    inner = np.abs(loaded.uvs[:, 1] - 0.5) > 0.05  # away from the colour edge
    np.testing.assert_allclose(got[inner], expected[inner], atol=0.02)
    t = topology(loaded.vertices, loaded.faces)
    assert t.watertight and t.genus == 0 and t.components == 1


def test_render_asset_shows_the_texture_colour_on_white(tmp_path):
    texture = np.zeros((32, 32, 3), np.uint8)
    texture[:] = (200, 30, 30)
    _write_textured_sphere(tmp_path / "m.glb", texture)
    images = render_asset(load_glb(tmp_path / "m.glb"), turntable_cameras(2), 32, shading="albedo")
    assert images.shape == (2, 3, 32, 32)
    centre = images[:, :, 14:18, 14:18].mean((0, 2, 3))
    assert torch.allclose(centre, torch.tensor([200, 30, 30]) / 255.0, atol=0.03)
    assert torch.allclose(images[:, :, 0, 0], torch.ones(2, 3))


def test_render_asset_with_vertex_colours():
    v, f = icosphere()
    asset = Asset(0.7 * v, f, colours=np.tile(np.array([26, 204, 26], np.uint8), (len(v), 1)))
    images = render_asset(asset, turntable_cameras(1), 32, shading="albedo")
    assert torch.allclose(images[0, :, 16, 16], torch.tensor([0.1, 0.8, 0.1]), atol=0.02)


def test_contact_sheet_lays_out_rows():
    views = np.zeros((4, 20, 30, 3), np.uint8)
    sheet = contact_sheet([("a red cube\nok", views), ("a blue sphere", views)], label_width=50)
    assert sheet.shape == (40, 50 + 4 * 30, 3)
    assert (sheet[:, :50] == 255).mean() > 0.5 and (sheet[5:15, 60:70] == 0).all()
