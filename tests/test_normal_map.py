import numpy as np
import trimesh

from meshdream.mesh.geometry import smooth_normals
from meshdream.texture.normal_map import bake_normal_map, decode_normal_map, vertex_tangents
from meshdream.mesh.uv import unwrap


def _unwrapped(mesh, size):
    v, f = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces)
    uv = unwrap(v, f, resolution=size)
    sv = v[uv.vmapping]
    return sv, uv.faces, uv.uvs, smooth_normals(sv, uv.faces)


def test_tangents_are_unit_and_orthogonal_to_normals():
    v, f, uv, n = _unwrapped(trimesh.creation.icosphere(subdivisions=2), 64)
    t = vertex_tangents(v, f, uv, n)
    assert np.allclose(np.linalg.norm(t[:, :3], axis=1), 1, atol=1e-4)
    assert np.abs((t[:, :3] * n).sum(1)).max() < 1e-4 and set(np.unique(t[:, 3])) <= {-1.0, 1.0}


def test_baked_map_restores_the_detailed_normals_on_a_coarse_mesh():
    """A sphere's radial normals, baked from a fine sphere onto a 80-face one, come back at the coarse vertices;
    a bumped fine surface gives a map that is not flat."""
    fine = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    coarse = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    v, f, uv, n = _unwrapped(coarse, 128)
    nmap = bake_normal_map(np.asarray(fine.vertices), np.asarray(fine.faces), smooth_normals(fine.vertices, fine.faces),
                           v, f, uv, n, 128)
    assert nmap.shape == (128, 128, 3) and nmap.dtype == np.uint8
    world = decode_normal_map(nmap, uv, v, f, n)
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.median((world * radial).sum(1)) > 0.99
    # mostly "straight up" in tangent space, since both surfaces are spheres
    assert np.median(nmap[..., 2]) > 240
    bumpy = fine.copy()
    bumpy.vertices = bumpy.vertices * (1 + 0.08 * np.sin(12 * bumpy.vertices[:, :1]))
    bumped = bake_normal_map(np.asarray(bumpy.vertices), np.asarray(bumpy.faces), smooth_normals(bumpy.vertices, bumpy.faces),
                             v, f, uv, n, 128)
    assert np.abs(bumped.astype(int) - nmap.astype(int)).mean() > 5
