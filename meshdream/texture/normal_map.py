"""Bake a detailed mesh's normals into a tangent-space normal map of a simpler (decimated) mesh.

Tangent space (glTF / OpenGL convention): per-vertex tangents along +u and bitangents along +v of the
UVs (v up, i.e. up in the PNG), orthogonalised against the smooth vertex normal, handedness in w
(bitangent = w * cross(normal, tangent)) — the frame MikkTSpace-style viewers rebuild from positions,
normals and UVs. A texel stores (n . t, n . b, n . n) * 0.5 + 0.5 of the detailed mesh's normal at the
closest point of its surface.
"""
from __future__ import annotations

import numpy as np


def vertex_tangents(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Tangents [V, 4]: unit xyz orthogonal to ``normals`` [V, 3] along +u, w = +-1 the bitangent's side."""
    p = vertices[faces].astype(np.float64)  # [F, 3, 3]
    t = uvs[faces].astype(np.float64)  # [F, 3, 2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = np.where(np.abs(det) > 1e-20, 1.0 / np.where(det == 0, 1, det), 0.0)[:, None]
    tan = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * r
    bit = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * r
    T = np.zeros_like(vertices, dtype=np.float64)
    B = np.zeros_like(T)
    for k in range(3):
        np.add.at(T, faces[:, k], tan)
        np.add.at(B, faces[:, k], bit)
    n = normals.astype(np.float64)
    T = T - n * (n * T).sum(1, keepdims=True)
    length = np.linalg.norm(T, axis=1, keepdims=True)
    # a vertex without a UV gradient gets any tangent orthogonal to its normal
    fallback = np.cross(n, np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    T = np.where(length > 1e-12, T / np.maximum(length, 1e-12), fallback / np.linalg.norm(fallback, axis=1, keepdims=True))
    w = np.where((np.cross(n, T) * B).sum(1) < 0, -1.0, 1.0)
    return np.concatenate([T, w[:, None]], 1).astype(np.float32)


def bake_normal_map(high_vertices: np.ndarray, high_faces: np.ndarray, high_normals: np.ndarray, low_vertices: np.ndarray,
                    low_faces: np.ndarray, low_uvs: np.ndarray, low_normals: np.ndarray, size: int) -> np.ndarray:
    """Normal map [size, size, 3] uint8 in PNG orientation (row 0 = v 1) for the low mesh (its UVs [V, 2], v up,
    and smooth normals [V, 3]) from the high mesh's normals [Vh, 3] at the closest surface point of each texel."""
    import torch
    import trimesh

    from .. import raster as dr
    from .bake import dilate, uv_positions

    tangents = vertex_tangents(low_vertices, low_faces, low_uvs, low_normals)
    attrs = torch.from_numpy(np.concatenate([low_vertices, low_normals, tangents], 1).astype(np.float32))
    texels, mask = uv_positions(dr.get_context("cpu"), attrs, torch.from_numpy(np.asarray(low_faces, np.int64)),
                                torch.from_numpy(np.asarray(low_uvs, np.float32)), size)
    flat = torch.zeros(size, size, 3, dtype=torch.float64)
    flat[..., 2] = 1.0  # an unbaked texel: the unperturbed normal
    if bool(mask.any()):
        t = texels[mask].numpy().astype(np.float64)
        pts, n_low, tan, w = t[:, :3], t[:, 3:6], t[:, 6:9], np.sign(t[:, 9:10]) + (t[:, 9:10] == 0)
        high = trimesh.Trimesh(high_vertices, high_faces, process=False)
        closest, _, tri = trimesh.proximity.closest_point(high, pts)
        bary = trimesh.triangles.points_to_barycentric(high.triangles[tri], closest)
        n_high = (high_normals[high_faces[tri]] * bary[:, :, None]).sum(1)
        unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
        n_high, n_low = unit(n_high), unit(n_low)
        tan = unit(tan - n_low * (n_low * tan).sum(1, keepdims=True))
        bit = w * np.cross(n_low, tan)
        local = np.stack([(n_high * tan).sum(1), (n_high * bit).sum(1), (n_high * n_low).sum(1)], 1)
        flat[mask] = torch.from_numpy(unit(local))
    out = dilate(flat * 0.5 + 0.5, mask).numpy()[::-1]  # texel rows (v up) -> PNG rows
    return np.ascontiguousarray((np.clip(out, 0, 1) * 255).round().astype(np.uint8))


def decode_normal_map(normal_map: np.ndarray, uvs: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                      normals: np.ndarray) -> np.ndarray:
    """World normals [V, 3] the map gives at the low mesh's vertices (for checks): the inverse of the bake."""
    from .sampling import sample_texture

    tangents = vertex_tangents(vertices, faces, uvs, normals)
    local = sample_texture(normal_map, uvs).astype(np.float64) / 255.0 * 2 - 1
    n = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    t, w = tangents[:, :3], tangents[:, 3:]
    b = w * np.cross(n, t)
    world = local[:, :1] * t + local[:, 1:2] * b + local[:, 2:3] * n
    return world / np.linalg.norm(world, axis=1, keepdims=True)
