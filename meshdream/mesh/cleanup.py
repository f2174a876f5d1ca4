"""Mesh clean-up on pymeshlab: floaters, duplicate vertices, degenerate faces, decimation."""
from __future__ import annotations

import numpy as np



def clean_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    min_component_fraction: float = 0.05,
    min_component_diameter: float = 0.0,
    merge_distance: float | None = None,
    smooth_iterations: int = 0,
    target_faces: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Clean a triangle mesh.

    vertices [V, 3], faces [F, 3], colors optional [V, 3] in [0, 1].
    - drops connected components with fewer than ``min_component_fraction`` of the largest one's faces
      (floaters of the NeRF), and, when ``min_component_diameter`` > 0, components whose bounding-box
      diagonal is below that fraction of the whole mesh's,
    - merges vertices closer than ``merge_distance`` (default: 1e-4 of the bounding-box diagonal; 0: no
      merging, for already welded marching-cubes output, where merging near-coincident vertices at a
      grid corner would make non-manifold edges),
    - removes duplicate and zero-area faces and unreferenced vertices,
    - smooths with ``smooth_iterations`` steps of Taubin's lambda|mu filter (shrinks far less than
      Laplacian smoothing; marching cubes' voxel terraces and small lumps go, the shape stays),
    - decimates to about ``target_faces`` faces by quadric edge collapse (keeping the topology).
    Returns (vertices float32, faces int64, colors float32 or None).
    """
    import pymeshlab

    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape [V, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and not np.issubdtype(faces.dtype, np.integer)):
        raise ValueError(f"faces must be integer vertex indices of shape [F, 3], got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"faces index vertices {faces.min()}..{faces.max()}, but there are only {len(vertices)} vertices")
    if colors is not None and np.shape(colors) != (len(vertices), 3):
        raise ValueError(f"colors must have shape [V, 3] = {(len(vertices), 3)}, got {np.shape(colors)}")
    if not 0 <= min_component_fraction <= 1 or not 0 <= min_component_diameter <= 1:
        raise ValueError(f"min_component_fraction ({min_component_fraction}) and min_component_diameter "
                         f"({min_component_diameter}) must be in [0, 1]")
    faces = faces.astype(np.int32)
    if len(faces) == 0:
        return vertices.astype(np.float32), faces.astype(np.int64).reshape(0, 3), None if colors is None else np.asarray(colors, np.float32)
    kwargs = {}
    if colors is not None:
        c = np.asarray(colors, dtype=np.float64)
        kwargs["v_color_matrix"] = np.concatenate([c, np.ones((len(c), 1))], axis=1)
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=vertices, face_matrix=faces, **kwargs))
    diag = float(np.linalg.norm(vertices.max(0) - vertices.min(0))) or 1.0
    if merge_distance is None or merge_distance > 0:
        ms.meshing_merge_close_vertices(threshold=pymeshlab.PureValue(merge_distance if merge_distance is not None else 1e-4 * diag))
    ms.meshing_remove_duplicate_faces()
    ms.meshing_remove_null_faces()
    if min_component_fraction > 0:
        sizes = _component_sizes(ms.current_mesh().face_matrix())
        if len(sizes) > 1:
            ms.meshing_remove_connected_component_by_face_number(mincomponentsize=max(1, int(min_component_fraction * max(sizes))))
    if min_component_diameter > 0:
        ms.meshing_remove_connected_component_by_diameter(mincomponentdiag=pymeshlab.PercentageValue(100.0 * min_component_diameter),
                                                          removeunref=True)
    ms.meshing_remove_unreferenced_vertices()
    if smooth_iterations > 0:
        m = ms.current_mesh()
        smoothed = taubin_smooth(m.vertex_matrix(), m.face_matrix(), int(smooth_iterations))
        kept = {"v_color_matrix": m.vertex_color_matrix()} if colors is not None else {}
        ms.add_mesh(pymeshlab.Mesh(vertex_matrix=smoothed, face_matrix=m.face_matrix(), **kept))
    if target_faces is not None and ms.current_mesh().face_number() > target_faces:
        ms.meshing_decimation_quadric_edge_collapse(targetfacenum=int(target_faces), preservenormal=True, preservetopology=True,
                                                     optimalplacement=True, planarquadric=True)
        ms.meshing_remove_unreferenced_vertices()
    m = ms.current_mesh()
    out_colors = m.vertex_color_matrix()[:, :3].astype(np.float32) if colors is not None else None
    return m.vertex_matrix().astype(np.float32), m.face_matrix().astype(np.int64), out_colors


def taubin_smooth(vertices: np.ndarray, faces: np.ndarray, iterations: int, lam: float = 0.5, mu: float = -0.53) -> np.ndarray:
    """Taubin's lambda|mu smoothing with the uniform Laplacian: vertices [V, 3] float, faces [F, 3] int ->
    smoothed vertices [V, 3]. Our own (numpy/scipy) so it does not depend on which MeshLab filter plugins a
    pymeshlab build ships (the slim GPU-machine wheel has no Taubin filter)."""
    import scipy.sparse as sp

    v = np.asarray(vertices, dtype=np.float64).copy()
    f = np.asarray(faces, dtype=np.int64)
    n = len(v)
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    adj = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adj.data[:] = 1.0  # each neighbour once
    degree = np.asarray(adj.sum(1)).ravel()
    degree[degree == 0] = 1.0
    for _ in range(iterations):
        for step in (lam, mu):
            v = v + step * (adj @ v / degree[:, None] - v)
    return v


def _component_sizes(faces: np.ndarray) -> list[int]:
    """Face counts of the edge-connected components."""
    from .geometry import connected_components, face_edges

    if len(faces) == 0:
        return []
    _, labels = connected_components(int(faces.max()) + 1, face_edges(faces))
    return np.bincount(labels[faces[:, 0]]).tolist()


def prepare_on_this_thread() -> None:
    """Run pymeshlab's clean-up once on the calling thread (a tetrahedron). pymeshlab sets up its filters on the first
    filter call, on that call's thread; when that is a worker thread, the process's heap is corrupt by the time it
    exits (glibc aborts: "malloc_consolidate(): unaligned fastbin chunk detected"). A program that runs stages on
    worker threads (``meshdream app``) calls this once from its main thread first."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
    clean_mesh(v, f)
