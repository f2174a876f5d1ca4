"""nvdiffrast's antialias forward pass, written out in NumPy from its CUDA source (nvdiffrast 0.3.3,
common/antialias.cu: AntialiasFwdMeshKernel builds the edge -> opposite-vertex hash, AntialiasFwdDiscontinuityKernel
lists the pixel pairs whose triangle ids differ, AntialiasFwdAnalysisKernel blends each pair). A test reference
for our C++ antialias on the CPU; slow (one Python loop iteration per pixel pair), for small images only.

The three rules that decide a pair, as the kernel has them:
1. the triangle is the one of the nearer pixel (or the one that is not background);
2. the edge is a silhouette edge when the vertex opposite to it in the neighbouring triangle (found by the
   edge's two vertex ids) lies on the same side of the edge as the triangle itself -- the mesh folds over
   there -- or when no triangle shares the edge; which triangle the *other pixel* shows does not matter;
3. of the triangle's edges crossing the line through the two pixel centres, the one crossed farthest along the
   pair (max d/dy) is used, and only if it is steeper than 45 degrees relative to the pair (|dy| >= |dx| in the
   pair's frame): a pixel pair blends an edge only along the axis more perpendicular to it, so each edge is
   antialiased along one axis, never both. The crossing may lie 1/16 pixel outside the segment (then clamped).
"""
from __future__ import annotations

import numpy as np

F32_MAX = np.finfo(np.float32).max


def _same_sign(a: float, b: float) -> bool:
    return (a >= 0) == (b >= 0)  # the kernel compares sign bits (0.0 counts as positive)


def _rational_gt(n0: float, n1: float, d0: float, d1: float) -> bool:
    return (n0 * d1 > n1 * d0) == _same_sign(d0, d1)


def _max_idx3(n: list, d: list) -> int:
    """The index of the largest n_i / d_i, compared as the kernel does (cross-multiplied)."""
    g10 = _rational_gt(n[1], n[0], d[1], d[0])
    g20 = _rational_gt(n[2], n[0], d[2], d[0])
    g21 = _rational_gt(n[2], n[1], d[2], d[1])
    if g20 and g21:
        return 2
    return 1 if g10 else 0


def _opposite_vertex_map(tri: np.ndarray) -> dict:
    """(va, vb) -> the vertex opposite to edge va-vb in the triangle that has it as (vb, va) or (va, vb)."""
    out: dict = {}
    for v0, v1, v2 in tri.tolist():
        for a, b, n in ((v1, v2, v0), (v2, v0, v1), (v0, v1, v2)):
            out.setdefault((min(a, b), max(a, b)), []).append(n)
    return out


def _find_opposite(edges: dict, va: int, vb: int, own: int) -> int:
    """nvdiffrast's evhash_find_vertex(va, vb, own): the other vertex across the edge, or -1 (no neighbour)."""
    for n in edges.get((min(va, vb), max(va, vb)), []):
        if n != own:
            return n
    return -1


def antialias_reference(color: np.ndarray, rast: np.ndarray, pos: np.ndarray, tri: np.ndarray,
                        slope_rule: bool = True, wing_rule: bool = True) -> np.ndarray:
    """color [B, H, W, C], rast [B, H, W, 4], pos [B, V, 4] (instance mode), tri [F, 3] -> antialiased color.

    ``slope_rule`` / ``wing_rule`` off give the variants the docs compare (each rule's share of the difference)."""
    B, H, W, C = color.shape
    out = color.astype(np.float64).copy()
    edges = _opposite_vertex_map(tri)
    xh, yh = W * 0.5, H * 0.5
    ids = np.rint(rast[..., 3]).astype(np.int64)  # triangle id + 1
    for pz in range(B):
        P = pos[pz].astype(np.float64)
        for py0 in range(H):
            for px0 in range(W):
                for d in (0, 1):  # 0: right neighbour, 1: down neighbour (the next row)
                    if (d == 0 and px0 == W - 1) or (d == 1 and py0 == H - 1):
                        continue
                    px1, py1 = px0 + (1 - d), py0 + d
                    t0, t1 = ids[pz, py0, px0] - 1, ids[pz, py1, px1] - 1
                    if t0 == t1:
                        continue
                    z0, z1 = rast[pz, py0, px0, 2], rast[pz, py1, px1, 2]
                    t = t0 if t0 >= 0 else t1
                    if t0 >= 0 and t1 >= 0:
                        t = t0 if z0 < z1 else t1
                    px, py = (px0, py0) if t == t0 else (px1, py1)
                    vi = tri[t].tolist()
                    ops = [_find_opposite(edges, vi[2], vi[1], vi[0]), _find_opposite(edges, vi[0], vi[2], vi[1]),
                           _find_opposite(edges, vi[1], vi[0], vi[2])]
                    p = [P[v] for v in vi]
                    o = [P[op] if op >= 0 else P[v] for op, v in zip(ops, vi)]
                    fx, fy = px + 0.5 - xh, py + 0.5 - yh
                    xy = [(q[0] / q[3] * xh - fx, q[1] / q[3] * yh - fy) for q in p]
                    oxy = [(q[0] / q[3] * xh - fx, q[1] / q[3] * yh - fy) for q in o]
                    (x0, y0), (x1, y1), (x2, y2) = xy
                    bb = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                    a = [(x1 - oxy[0][0]) * (y2 - oxy[0][1]) - (x2 - oxy[0][0]) * (y1 - oxy[0][1]),
                         (x2 - oxy[1][0]) * (y0 - oxy[1][1]) - (x0 - oxy[1][0]) * (y2 - oxy[1][1]),
                         (x0 - oxy[2][0]) * (y1 - oxy[2][1]) - (x1 - oxy[2][0]) * (y0 - oxy[2][1])]
                    sil = [_same_sign(ai, bb) for ai in a] if wing_rule else [True, True, True]
                    if not any(sil):
                        continue
                    if d:
                        x0, y0, x1, y1, x2, y2 = y0, x0, y1, x1, y2, x2
                    dx = [x2 - x1, x0 - x2, x1 - x0]
                    dy = [y2 - y1, y0 - y2, y1 - y0]
                    ds = 1.0 if t == t0 else -1.0
                    dd = [ds * (x1 * dy[0] - y1 * dx[0]), ds * (x2 * dy[1] - y2 * dx[1]), ds * (x0 * dy[2] - y0 * dx[2])]
                    if _same_sign(y1, y2):
                        dd[0], dy[0] = -F32_MAX, 1.0
                    if _same_sign(y2, y0):
                        dd[1], dy[1] = -F32_MAX, 1.0
                    if _same_sign(y0, y1):
                        dd[2], dy[2] = -F32_MAX, 1.0
                    di = _max_idx3(dd, dy)
                    dc = -F32_MAX
                    if sil[di] and (abs(dy[di]) >= abs(dx[di]) or not slope_rule):
                        dc = dd[di] / dy[di]
                    eps = 0.0625
                    if -eps < dc < 1 + eps:
                        dc = min(max(dc, 0.0), 1.0)
                        alpha = ds * (0.5 - dc)
                        target = (py0, px0) if alpha > 0 else (py1, px1)
                        out[pz, target[0], target[1]] += alpha * (color[pz, py1, px1] - color[pz, py0, px0])
    return out.astype(color.dtype)
