"""Mesh regularisers for the refine stage: Laplacian smoothness and normal consistency."""
from __future__ import annotations

import numpy as np
import torch

from .geometry import face_edges, face_normals


def edges_of(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges [E, 2] of a triangle mesh."""
    e = face_edges(faces)
    return np.unique(np.sort(e, axis=1), axis=0)


def face_pairs(faces: np.ndarray) -> np.ndarray:
    """Pairs of faces sharing an edge [P, 2]."""
    e = face_edges(faces)
    e = np.sort(e, axis=1)
    fid = np.tile(np.arange(len(faces)), 3)
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, fid = e[order], fid[order]
    same = (e[1:] == e[:-1]).all(1)
    return np.stack([fid[:-1][same], fid[1:][same]], 1)


def laplacian_loss(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean squared uniform Laplacian |v - mean(neighbours)|^2; zero on an affine (flat, regular) patch
    only where neighbours are symmetric. vertices [V, 3], edges [E, 2] long."""
    V = vertices.shape[0]
    i, j = edges[:, 0], edges[:, 1]
    summed = torch.zeros_like(vertices).index_add(0, i, vertices[j]).index_add(0, j, vertices[i])
    degree = torch.zeros(V, dtype=vertices.dtype, device=vertices.device).index_add(0, i, torch.ones_like(i, dtype=vertices.dtype))
    degree = degree.index_add(0, j, torch.ones_like(j, dtype=vertices.dtype)).clamp_min(1)
    lap = vertices - summed / degree[:, None]
    return (lap ** 2).sum(-1).mean()


def normal_consistency_loss(vertices: torch.Tensor, faces: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cos) between the normals of faces sharing an edge; 0 on a plane."""
    n = face_normals(vertices, faces)
    return (1 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()
