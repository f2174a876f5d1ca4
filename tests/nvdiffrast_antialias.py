"""nvdiffrast's antialias, forward pass, in plain Python: the reference the CPU backend's antialias is
checked against (tests only; the package never imports it).

Written from nvdiffrast's documentation ("a silhouette is any edge that connects to just one triangle, or
connects two triangles so that one folds behind the other"; the coverage of a pixel is estimated from the
exact location of the silhouette edge between two pixel centres and the point-sampled colours) and from
its CUDA kernels (csrc/common/antialias.cu: AntialiasFwdMeshKernel, AntialiasFwdDiscontinuityKernel,
AntialiasFwdAnalysisKernel), step by step, one pixel pair at a time, in double precision:

1. topology: for every undirected edge, the vertices opposite it in the (first two) triangles using it;
2. every pixel whose right or lower neighbour shows another triangle id (or background) gives a pair;
3. the pair's triangle is the nearer one (smaller z/w; a pixel without a triangle is behind everything);
   positions are taken relative to that triangle's pixel centre, in pixels;
4. an edge is a silhouette when the triangle has no neighbour across it, or the neighbour's opposite
   vertex lies on the same side of the edge as the triangle's own (the neighbour folds behind);
5. of the edges crossing the line through the two pixel centres, the one crossing furthest towards the
   other pixel is taken, if it is a silhouette and at least as steep as it is wide across that line
   (shallower edges are left to the pairs in the other direction);
6. its crossing dc (0: at the triangle's pixel centre, 1: at the other one), accepted within 1/16 pixel of
   [0, 1] and clamped to it, moves colour: alpha = ds (1/2 - dc), ds = +1 when the triangle is in the
   first pixel of the pair, -1 otherwise; out[first if alpha > 0 else second] += alpha (c_second - c_first).
"""
from __future__ import annotations

import math

import torch


def _same_sign(a: float, b: float) -> bool:
    """Sign bits equal (as nvdiffrast compares floats: +0 and -0 differ)."""
    return math.copysign(1.0, a) == math.copysign(1.0, b)


def _rational_gt(n0: float, n1: float, d0: float, d1: float) -> bool:
    """n0 / d0 > n1 / d1 without dividing."""
    return (n0 * d1 > n1 * d0) == _same_sign(d0, d1)


def _max_index(n, d) -> int:
    g10 = _rational_gt(n[1], n[0], d[1], d[0])
    g20 = _rational_gt(n[2], n[0], d[2], d[0])
    g21 = _rational_gt(n[2], n[1], d[2], d[1])
    if g20 and g21:
        return 2
    return 1 if g10 else 0


def opposite_vertices(tri: torch.Tensor, num_vertices: int) -> dict:
    """{(a, b) with a < b: [vertex opposite the edge in each of its first two triangles]}."""
    opposite: dict = {}
    for v in tri.tolist():
        if any(i < 0 or i >= num_vertices for i in v) or len(set(v)) < 3:
            continue  # degenerate or corrupt triangles take no part, as in nvdiffrast
        for k in range(3):
            a, b, o = v[(k + 1) % 3], v[(k + 2) % 3], v[k]
            entry = opposite.setdefault((min(a, b), max(a, b)), [])
            if len(entry) < 2 and o not in entry:
                entry.append(o)
    return opposite


def _opposite(opposite: dict, a: int, b: int, own: int) -> int:
    """The vertex across edge (a, b) from ``own``, or -1 (no neighbour there: always a silhouette)."""
    entry = opposite.get((min(a, b), max(a, b)), [])
    if own not in entry:
        return -1
    others = [v for v in entry if v != own]
    return others[0] if others else -1


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """color [B, H, W, C], rast [B, H, W, 4] (u, v, z/w, id + 1), pos [B, V, 4] clip space, tri [F, 3]
    -> antialiased colours [B, H, W, C] (float64)."""
    B, H, W, C = color.shape
    V = pos.shape[1]
    F = tri.shape[0]
    c_in = color.detach().double()
    out = c_in.clone()
    r = rast.detach().double()
    p_all = pos.detach().double()
    tris = tri.tolist()
    opposite = opposite_vertices(tri, V)
    xh, yh = W * 0.5, H * 0.5
    for b in range(B):
        ids = r[b, ..., 3]
        for py in range(H):
            for px in range(W):
                for d in (0, 1):  # 0: right neighbour, 1: lower neighbour (the next row)
                    qx, qy = (px + 1, py) if d == 0 else (px, py + 1)
                    if qx >= W or qy >= H or float(ids[py, px]) == float(ids[qy, qx]):
                        continue
                    t0, t1 = int(ids[py, px]) - 1, int(ids[qy, qx]) - 1
                    t = t0 if t0 >= 0 else t1
                    if t0 >= 0 and t1 >= 0:
                        t = t0 if float(r[b, py, px, 2]) < float(r[b, qy, qx, 2]) else t1
                    cx, cy = (px, py) if t == t0 else (qx, qy)  # positions relative to the triangle's pixel
                    if t < 0 or t >= F:
                        continue
                    vi = tris[t]
                    if any(v < 0 or v >= V for v in vi):
                        continue
                    ops = [_opposite(opposite, vi[(k + 1) % 3], vi[(k + 2) % 3], vi[k]) for k in range(3)]
                    fx, fy = cx + 0.5 - xh, cy + 0.5 - yh

                    def screen(v):
                        q = p_all[b, v]
                        return float(q[0] / q[3]) * xh - fx, float(q[1] / q[3]) * yh - fy

                    xy = [screen(v) for v in vi]
                    oxy = [screen(o) if o >= 0 else xy[k] for k, o in enumerate(ops)]
                    (x0, y0), (x1, y1), (x2, y2) = xy
                    bb = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                    a = [(x1 - oxy[0][0]) * (y2 - oxy[0][1]) - (x2 - oxy[0][0]) * (y1 - oxy[0][1]),
                         (x2 - oxy[1][0]) * (y0 - oxy[1][1]) - (x0 - oxy[1][0]) * (y2 - oxy[1][1]),
                         (x0 - oxy[2][0]) * (y1 - oxy[2][1]) - (x1 - oxy[2][0]) * (y0 - oxy[2][1])]
                    silhouette = [_same_sign(ak, bb) for ak in a]
                    if not any(silhouette):
                        continue
                    if d:  # a vertical pair: swap the axes, so the pair always lies along x
                        x0, y0, x1, y1, x2, y2 = y0, x0, y1, x1, y2, x2
                    X, Y = (x0, x1, x2), (y0, y1, y2)
                    ds = 1.0 if t == t0 else -1.0
                    n, den = [], []
                    for k in range(3):  # edge k: from vertex k+1 to vertex k+2
                        i, j = (k + 1) % 3, (k + 2) % 3
                        dx, dy = X[j] - X[i], Y[j] - Y[i]
                        if _same_sign(Y[i], Y[j]):  # both ends on one side of the pair's line: no crossing
                            n.append(-3.402823466e38)
                            den.append(1.0)
                        else:
                            n.append(ds * (X[i] * dy - Y[i] * dx))
                            den.append(dy)
                    k = _max_index(n, den)
                    i, j = (k + 1) % 3, (k + 2) % 3
                    dx, dy = X[j] - X[i], Y[j] - Y[i]
                    if not (silhouette[k] and abs(den[k]) >= abs(dx) and not _same_sign(Y[i], Y[j])):
                        continue
                    dc = n[k] / den[k]
                    eps = 0.0625  # nvdiffrast expects no more than 1/16 pixel of inaccuracy
                    if not (-eps < dc < 1 + eps):
                        continue
                    dc = min(max(dc, 0.0), 1.0)
                    alpha = ds * (0.5 - dc)
                    target = (py, px) if alpha > 0 else (qy, qx)
                    out[b, target[0], target[1]] += alpha * (c_in[b, qy, qx] - c_in[b, py, px])
    return out
