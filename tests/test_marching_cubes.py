import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter
from skimage.measure import marching_cubes as sk_marching_cubes

from meshdream.mesh import marching_cubes


def grid(n, lo=-1.0, hi=1.0):
    x = np.linspace(lo, hi, n)
    return np.meshgrid(x, x, x, indexing="ij")


def sphere(n=48, r=0.7, centre=(0, 0, 0)):
    X, Y, Z = grid(n)
    return r - np.sqrt((X - centre[0]) ** 2 + (Y - centre[1]) ** 2 + (Z - centre[2]) ** 2)


def torus(n=64, R=0.55, r=0.22):
    X, Y, Z = grid(n)
    return r - np.sqrt((np.sqrt(X ** 2 + Z ** 2) - R) ** 2 + Y ** 2)


def random_smooth(seed, shape=(24, 20, 28), sigma=2.0):
    g = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    g[0] = g[-1] = g[:, 0] = g[:, -1] = g[:, :, 0] = g[:, :, -1] = -1.0  # surface closes inside the grid
    return g


def mesh(v, f):
    return trimesh.Trimesh(v, f, process=False)


def sk_mesh(vol, level, bounds=None):
    spacing = (1.0, 1.0, 1.0) if bounds is None else tuple((b - a) / (n - 1) for a, b, n in zip(bounds[0], bounds[1], vol.shape))
    v, f, _, _ = sk_marching_cubes(vol, level, spacing=spacing)
    if bounds is not None:
        v = v + np.asarray(bounds[0])
    return mesh(v, f)


def assert_edge_manifold(f):
    """Every undirected edge is used exactly twice, once in each direction (closed, consistently oriented)."""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    directed = {tuple(x) for x in e.tolist()}
    assert len(directed) == len(e), "a directed edge appears twice: inconsistent orientation"
    assert all((b, a) in directed for a, b in directed), "an edge has no opposite half-edge: hole"


BOUNDS = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("field, area, volume", [
    (sphere(), 4 * np.pi * 0.7 ** 2, 4 / 3 * np.pi * 0.7 ** 3),
    (torus(), 4 * np.pi ** 2 * 0.55 * 0.22, 2 * np.pi ** 2 * 0.55 * 0.22 ** 2),
])
def test_analytic_shapes_match_skimage_and_truth(field, area, volume):
    v, f = marching_cubes(field, 0.0, bounds=BOUNDS)
    assert v.dtype == np.float32 and f.dtype == np.int64 and v.shape[1] == 3 and f.shape[1] == 3
    m, ref = mesh(v, f), sk_mesh(field, 0.0, BOUNDS)
    assert m.is_watertight
    assert_edge_manifold(f)
    assert m.volume > 0  # outward normals: positive signed volume
    assert abs(m.area - ref.area) / ref.area < 0.01
    assert abs(m.volume - abs(ref.volume)) / abs(ref.volume) < 0.01
    assert abs(m.area - area) / area < 0.02 and abs(m.volume - volume) / volume < 0.03


@pytest.mark.parametrize("seed", range(6))
def test_random_smooth_fields(seed):
    g = random_smooth(seed)
    v, f = marching_cubes(g, 0.0)
    m, ref = mesh(v, f), sk_mesh(g, 0.0)
    assert m.is_watertight
    assert_edge_manifold(f)
    assert m.volume > 0
    assert abs(m.area - ref.area) / ref.area < 0.01
    assert abs(m.volume - abs(ref.volume)) / abs(ref.volume) < 0.01


def test_normals_point_outward_on_sphere():
    v, f = marching_cubes(sphere(), 0.0, bounds=BOUNDS)
    m = mesh(v, f)
    assert (np.einsum("ij,ij->i", m.face_normals, m.triangles_center) > 0).all()


def test_shared_vertices_one_per_crossed_edge():
    field = sphere(24)
    v, f = marching_cubes(field, 0.0)
    inside = field > 0
    crossed = sum(int((np.diff(inside.astype(np.int8), axis=a) != 0).sum()) for a in range(3))
    assert len(v) == crossed
    assert len(np.unique(v.round(6), axis=0)) == len(v)
    assert len(np.unique(f)) == len(v)  # every vertex is used


def test_empty_and_full():
    for vol in (np.zeros((5, 6, 7)), np.ones((5, 6, 7))):
        v, f = marching_cubes(vol, 0.5)
        assert v.shape == (0, 3) and f.shape == (0, 3)


def test_torch_input_and_dtype():
    field = sphere(20)
    v1, f1 = marching_cubes(field, 0.0)
    v2, f2 = marching_cubes(torch.from_numpy(field).double(), 0.0)
    assert np.array_equal(v1, v2) and np.array_equal(f1, f2)


@pytest.mark.parametrize("vol, match", [
    (np.zeros((4, 4)), "3-dimensional"),
    (np.zeros((1, 4, 4)), "at least 2 samples"),
    (np.full((3, 3, 3), np.nan), "NaN or infinite"),
    (np.array([[[np.inf, 0], [0, 0]], [[0, 0], [0, 0]]]), "NaN or infinite"),
])
def test_bad_input(vol, match):
    with pytest.raises(ValueError, match=match):
        marching_cubes(vol, 0.0)


def test_bad_level():
    with pytest.raises(ValueError, match="level must be finite"):
        marching_cubes(np.zeros((3, 3, 3)), float("nan"))


@settings(max_examples=25, deadline=None)
@given(
    r=st.floats(0.2, 0.8),
    cx=st.floats(-0.15, 0.15), cy=st.floats(-0.15, 0.15), cz=st.floats(-0.15, 0.15),
    n=st.integers(12, 32),
)
def test_property_spheres_watertight_and_on_surface(r, cx, cy, cz, n):
    field = sphere(n, r, (cx, cy, cz))
    v, f = marching_cubes(field, 0.0, bounds=BOUNDS)
    if len(f) == 0:
        return
    assert_edge_manifold(f)
    assert mesh(v, f).volume > 0
    # vertices are linear interpolations on grid edges: within about a cell of the true sphere
    d = np.linalg.norm(v - np.array([cx, cy, cz]), axis=1) - r
    assert np.abs(d).max() < 2.0 / (n - 1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(1.2, 3.0), level=st.floats(-0.05, 0.05))
def test_property_random_fields_closed_and_oriented(seed, sigma, level):
    g = random_smooth(seed, (14, 16, 12), sigma)
    v, f = marching_cubes(g, level)
    if len(f) == 0:
        return
    assert_edge_manifold(f)
    assert mesh(v, f).volume > 0
    # every vertex lies on a grid edge: exactly two of its coordinates are integers
    frac = np.abs(v - np.round(v)) < 1e-4
    assert (frac.sum(1) >= 2).all()
    # exactly one vertex per crossed edge, at the linear interpolation of the level on that edge
    assert len(v) == crossed_edges(g, level)
    assert len(np.unique(v, axis=0)) == len(v)
    assert on_interpolated_edge(v, g, level).all()


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.1, 10), shift=st.floats(-5, 5), seed=st.integers(0, 1000))
def test_property_bounds_are_affine(scale, shift, seed):
    g = random_smooth(seed, (10, 12, 9))
    v0, f0 = marching_cubes(g, 0.0)
    lo = np.array([shift, -shift, 2 * shift])
    hi = lo + scale * (np.array(g.shape) - 1)
    v1, f1 = marching_cubes(g, 0.0, bounds=(lo, hi))
    assert np.array_equal(f0, f1)
    np.testing.assert_allclose(v1, lo + scale * v0, rtol=1e-5, atol=1e-4 * max(1, scale))


def crossed_edges(field, level=0.0):
    inside = field > level
    return sum(int((np.diff(inside.astype(np.int8), axis=a) != 0).sum()) for a in range(3))


def on_interpolated_edge(v, g, level):
    """[V] bool: vertex (index space) lies on a grid edge whose ends straddle the level, at the linearly
    interpolated point (t clamped to [1e-6, 1 - 1e-6] as the kernel does)."""
    ok = np.zeros(len(v), bool)
    shape = np.array(g.shape)
    for a in range(3):
        others = [b for b in range(3) if b != a]
        on_line = (np.abs(v[:, others] - np.round(v[:, others])) < 1e-4).all(1)
        for shift in (0, 1):  # float32 may round a t ~ 1 vertex onto the next sample
            base = np.round(v).astype(int)
            base[:, a] = np.clip(np.floor(v[:, a]).astype(int) - shift, 0, shape[a] - 2)
            tip = base.copy()
            tip[:, a] += 1
            g0, g1 = g[tuple(base.T)], g[tuple(tip.T)]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.clip((level - g0) / (g1 - g0), 1e-6, 1 - 1e-6)
            ok |= on_line & ((g0 > level) != (g1 > level)) & (np.abs(v[:, a] - base[:, a] - t) < 1e-4)
    return ok


def tile_blocks(blocks, pad=2):
    """Blocks [N, a, b, c] side by side along x, each surrounded by `pad` outside samples (-1)."""
    n, a, b, c = blocks.shape
    out = np.full((n * (a + pad) + pad, b + 2 * pad, c + 2 * pad), -1.0)
    for q in range(n):
        x0 = pad + q * (a + pad)
        out[x0:x0 + a, pad:pad + b, pad:pad + c] = blocks[q]
    return out


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_every_pair_of_neighbouring_cells_is_closed(axis):
    """All 4096 sign patterns of two cells sharing a face (normal to `axis`), each padded with outside
    samples: the table must triangulate the shared face identically from both sides or a hole appears."""
    rng = np.random.default_rng(axis)
    codes = np.arange(4096)
    signs = ((codes[:, None] >> np.arange(12)) & 1).reshape(4096, 3, 2, 2) * 2.0 - 1.0
    blocks = np.moveaxis(signs * rng.uniform(0.05, 1.0, signs.shape), 1, 1 + axis)
    field = tile_blocks(np.ascontiguousarray(blocks))
    v, f = marching_cubes(field, 0.0)
    assert len(v) == crossed_edges(field)
    assert_edge_manifold(f)
    assert mesh(v, f).volume > 0


def test_all_256_cases_closed_and_outward():
    codes = np.arange(256)
    signs = ((codes[:, None] >> np.arange(8)) & 1).reshape(256, 2, 2, 2) * 2.0 - 1.0  # corner bits (x, y, z) little-endian
    signs = signs.transpose(0, 3, 2, 1)  # bit dx + 2 dy + 4 dz -> [x, y, z]
    field = tile_blocks(signs * np.random.default_rng(0).uniform(0.05, 1.0, signs.shape))
    v, f = marching_cubes(field, 0.0)
    assert_edge_manifold(f)
    parts = mesh(v, f).split(only_watertight=False)
    assert all(p.volume > 0 for p in parts)  # every closed piece is outward


def test_values_equal_to_level_and_plateaus():
    """Samples exactly at the level count as outside; no zero-length edges or coincident vertices appear."""
    rng = np.random.default_rng(3)
    g = rng.integers(-1, 2, size=(12, 13, 11)).astype(np.float64)
    g[0] = g[-1] = g[:, 0] = g[:, -1] = g[:, :, 0] = g[:, :, -1] = 0.0
    v, f = marching_cubes(g, 0.0)
    assert len(v) == crossed_edges(g)
    assert_edge_manifold(f)
    assert len(np.unique(v, axis=0)) == len(v)
    assert on_interpolated_edge(v, g, 0.0).all()
    assert mesh(v, f).volume > 0


def test_surfaces_parallel_to_rows_and_open_surfaces():
    """A capped cylinder along z (rows that are uniform but differ from their neighbours) is closed;
    a plane crossing the grid is an open sheet whose interior edges are shared by two faces."""
    X, Y, Z = grid(40)
    cyl = np.minimum(0.5 - np.sqrt(X ** 2 + Y ** 2), 0.8 - np.abs(Z))
    v, f = marching_cubes(cyl, 0.0, bounds=BOUNDS)
    assert_edge_manifold(f)
    m = mesh(v, f)
    assert abs(m.volume - np.pi * 0.25 * 1.6) / (np.pi * 0.25 * 1.6) < 0.02
    for plane in (X - 0.1, Y + 0.3, Z - 0.05, X + Y + Z):
        v, f = marching_cubes(plane, 0.0, bounds=BOUNDS)
        e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _, counts = np.unique(e, axis=0, return_counts=True)
        assert counts.max() == 2 and len(v) == crossed_edges(plane)


def test_matches_skimage_on_gyroid():
    X, Y, Z = grid(64)
    g = np.sin(6 * X) * np.cos(6 * Y) + np.sin(6 * Y) * np.cos(6 * Z) + np.sin(6 * Z) * np.cos(6 * X)
    g = np.minimum(g, 0.9 - np.maximum(np.maximum(np.abs(X), np.abs(Y)), np.abs(Z)))  # closed inside the grid
    v, f = marching_cubes(g, 0.0)
    m, ref = mesh(v, f), sk_mesh(g, 0.0)
    assert_edge_manifold(f)
    assert abs(m.area - ref.area) / ref.area < 0.01
    assert abs(m.volume - abs(ref.volume)) / abs(ref.volume) < 0.01
