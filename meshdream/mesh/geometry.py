"""Mesh geometry: face and vertex normals, welding UV-seam duplicates, connected components.

Two array worlds, one home: :func:`face_normals` and :func:`vertex_normals` are torch (differentiable: refine
renders through them while it moves the vertices); :func:`weld`, :func:`smooth_normals` and
:func:`connected_components` are numpy, for meshes as files (export, metrics, clean-up). torch is imported by
the torch functions only, so the file writers (and the CLI that lists their formats) stay torch-free.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit face normals [F, 3] (counter-clockwise = outward) of vertices [V, 3], faces [F, 3] (long)."""
    import torch

    v = vertices[faces]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [V, 3] (no welding: a vertex split along a UV seam gets each side's own)."""
    import torch

    v = vertices[faces]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)  # length = 2 * area
    out = torch.zeros_like(vertices)
    for k in range(3):
        out = out.index_add(0, faces[:, k], n)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge vertices with bit-identical float32 positions (UV-seam duplicates carry the same position).

    Returns (welded vertices [W, 3] float64, faces [F', 3] into them, index [V] old -> welded); faces that
    collapse (two corners on one welded vertex) are dropped."""
    v = np.ascontiguousarray(vertices, dtype=np.float32)  # GLB positions are float32
    unique, index = np.unique(v.view(np.dtype((np.void, 12))).ravel(), return_inverse=True)
    welded = np.frombuffer(unique.tobytes(), np.float32).reshape(-1, 3).astype(np.float64)
    f = index.reshape(-1)[faces] if len(faces) else np.zeros((0, 3), np.int64)
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return welded, f[keep].astype(np.int64), index.reshape(-1)


def smooth_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals [V, 3] float64 of the surface with coincident vertices welded, so a
    vertex split along a UV seam gets the same normal on both sides; (0, 0, 1) where no face has area."""
    wv, wf, index = weld(vertices, faces)
    n_face = np.cross(wv[wf[:, 1]] - wv[wf[:, 0]], wv[wf[:, 2]] - wv[wf[:, 0]])  # length = 2 * area
    acc = np.zeros_like(wv)
    for k in range(3):
        np.add.at(acc, wf[:, k], n_face)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    n = np.where(length > 1e-12, acc / np.maximum(length, 1e-12), np.array([0.0, 0.0, 1.0]))
    return n[index]


def connected_components(n: int, edges: np.ndarray) -> tuple[int, np.ndarray]:
    """Components of the undirected graph on n nodes with edges [E, 2]: (count, label [n] of each node)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return scipy_components(graph, directed=False)


def face_edges(faces: np.ndarray) -> np.ndarray:
    """The three directed edges [3F, 2] of every face (0-1 of all faces, then 1-2, then 2-0)."""
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
