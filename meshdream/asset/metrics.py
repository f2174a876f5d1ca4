"""Judging an exported asset as a file: what a user who opens the GLB would see.

- :func:`load_glb` reads the geometry and its texture (or vertex colours) back from disk;
- :func:`topology` welds the UV-seam duplicates and counts components, boundary and non-manifold
  edges, Euler characteristic and genus;
- :func:`fit_primitive` finds the similarity (scale, rotation, translation) that best lays the asset
  onto a reference primitive (the prior's own SDFs, several ICP starts) and measures the symmetric
  Chamfer distance and the normal deviation there;
- :func:`render_asset` renders it from given cameras through our rasteriser, shaded like the prior's
  training images; :func:`contact_sheet` lays labelled views out in one PNG.

Lower layer: never imports ``meshdream.stages``.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .model import Asset
from ..engine.device import torch_threads
from ..mesh.geometry import connected_components, face_edges, face_normals, smooth_normals, weld
from ..prior.primitives import SDFS, SHAPES

# Size the prior's primitives are drawn at is 0.6..0.85; the reference uses the middle. Chamfer is
# reported relative to the reference's bounding-box diagonal, and alignment fits the scale, so the
# choice only fixes units.
REFERENCE_SIZE = 0.725


# ---------------------------------------------------------------- loading


def load_glb(path: str | os.PathLike) -> Asset:
    """Read a GLB / glTF (or any mesh trimesh reads) from disk, node transforms applied: an Asset with float64
    vertices and either uvs + its texture (the base colour factor applied), or vertex colours, or neither."""
    import trimesh

    loaded = trimesh.load(str(path), process=False)
    meshes = [g for g in (loaded.dump(concatenate=False) if isinstance(loaded, trimesh.Scene) else [loaded])
              if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not meshes:
        return Asset(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    if len(meshes) > 1:  # several primitives: geometry only (our exporter writes one)
        mesh = trimesh.util.concatenate([trimesh.Trimesh(m.vertices, m.faces, process=False) for m in meshes])
        return Asset(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64))
    mesh = meshes[0]
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            tex = np.asarray(image.convert("RGB"))
            factor = getattr(material, "baseColorFactor", None)
            if factor is not None and any(int(c) != 255 for c in factor[:3]):
                tex = (tex * (np.asarray(factor[:3], np.float32) / 255.0)).round().astype(np.uint8)
            return Asset(v, f, uvs=np.asarray(visual.uv, np.float64), texture=tex)
    if visual.kind == "vertex":
        return Asset(v, f, colours=np.asarray(visual.vertex_colors, np.uint8)[:, :3])
    return Asset(v, f)


# ---------------------------------------------------------------- topology


@dataclass
class Topology:
    vertices: int  # referenced by a face
    edges: int
    faces: int
    components: int  # connected through shared vertices
    boundary_edges: int  # in one face
    boundary_loops: int  # connected groups of boundary edges
    non_manifold_edges: int  # in three or more faces
    oriented: bool  # every two-face edge is walked once each way
    watertight: bool  # every edge in exactly two faces
    euler: int  # V - E + F
    genus: Optional[float]  # (2 C - chi - loops) / 2; None where non-manifold edges make it meaningless

    def as_dict(self) -> dict:
        return asdict(self)


def topology(vertices: np.ndarray, faces: np.ndarray, weld_seams: bool = True) -> Topology:
    """Topology of the triangle mesh (vertices [V, 3], faces [F, 3]), after welding seams by default."""
    if weld_seams:
        vertices, faces, _ = weld(vertices, faces)
    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        return Topology(0, 0, 0, 0, 0, 0, 0, True, False, 0, None)
    used, faces = np.unique(faces, return_inverse=True)
    faces = faces.reshape(-1, 3)
    V, Fn = len(used), len(faces)
    directed = face_edges(faces)
    undirected = np.sort(directed, axis=1)
    edges, counts = np.unique(undirected, axis=0, return_counts=True)
    E = len(edges)
    chi = V - E + Fn
    C, _ = connected_components(V, edges)
    boundary = edges[counts == 1]
    if len(boundary):
        labels = connected_components(V, boundary)[1]
        loops = len(np.unique(labels[np.unique(boundary)]))
    else:
        loops = 0
    non_manifold = int((counts > 2).sum())
    _, dcounts = np.unique(directed, axis=0, return_counts=True)
    oriented = bool(dcounts.max() == 1) and non_manifold == 0
    twice = 2 * C - chi - loops
    genus = None if non_manifold or twice % 2 else twice / 2
    return Topology(V, E, Fn, int(C), int(len(boundary)), int(loops), non_manifold, oriented,
                    bool(len(boundary) == 0 and non_manifold == 0), int(chi), genus)


# ---------------------------------------------------------------- reference primitives


def primitive_sdf(shape: str, points: np.ndarray, size: float = REFERENCE_SIZE) -> np.ndarray:
    """Signed distance [N] (negative inside) of points [N, 3] to the prior's ``shape`` in its own frame
    (centred, upright, unrotated), exactly the geometry the prior's training renders show."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    p = torch.from_numpy(np.ascontiguousarray(points, np.float64))
    # small batches, called hundreds of times by ICP: one thread avoids the pool's hand-off cost, which
    # on a busy machine is 1000x the work itself
    with torch_threads(1):
        return SDFS[SHAPES.index(shape)](p, torch.full((len(p),), float(size), dtype=torch.float64)).numpy()


def primitive_project(shape: str, points: np.ndarray, size: float = REFERENCE_SIZE, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface points [N, 3], unit outward normals [N, 3] and distances [N] (>= 0) of points [N, 3]."""
    d = primitive_sdf(shape, points, size)
    grad = np.stack([primitive_sdf(shape, points + e, size) - primitive_sdf(shape, points - e, size)
                     for e in np.eye(3) * eps], axis=-1)
    n = grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-12)
    return points - d[:, None] * n, n, np.abs(d)


def primitive_mesh(shape: str, resolution: int, size: float = REFERENCE_SIZE, bound: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The primitive meshed by our marching cubes from its SDF on a resolution^3 grid over [-bound, bound]^3
    (the same grid the pipeline extracts on): vertices [V, 3], faces [F, 3]."""
    from ..mesh import marching_cubes

    lin = np.linspace(-bound, bound, resolution)
    pts = np.stack(np.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
    inside = -primitive_sdf(shape, pts, size).reshape(resolution, resolution, resolution)  # larger inside
    v, f = marching_cubes(inside, 0.0, ((-bound,) * 3, (bound,) * 3))
    return v.astype(np.float64), f


# ---------------------------------------------------------------- alignment and Chamfer


@dataclass
class Similarity:
    """x -> scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray  # [3, 3]
    translation: np.ndarray  # [3]

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation

    def inverse_apply(self, points: np.ndarray) -> np.ndarray:
        return (points - self.translation) @ self.rotation / self.scale


def umeyama(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity taking src [N, 3] onto dst [N, 3] (Umeyama 1991), a proper rotation."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var_s = (xs ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(S) @ D) / max(var_s, 1e-300))
    return Similarity(scale, R, mu_d - scale * R @ mu_s)


def cube_rotations() -> np.ndarray:
    """The 24 proper rotations of the cube [24, 3, 3]: ICP starts spread over SO(3)."""
    out = []
    for perm in ((0, 1, 2), (1, 2, 0), (2, 0, 1), (1, 0, 2), (0, 2, 1), (2, 1, 0)):
        for signs in np.ndindex(2, 2, 2):
            R = np.zeros((3, 3))
            for i, j in enumerate(perm):
                R[i, j] = 1.0 if signs[i] == 0 else -1.0
            if np.linalg.det(R) > 0:
                out.append(R)
    return np.stack(out)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform points [count, 3] on the mesh and the face [count] each lies on."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
    t = tri[face]
    pts = (1 - r1)[:, None] * t[:, 0] + (r1 * (1 - r2))[:, None] * t[:, 1] + (r1 * r2)[:, None] * t[:, 2]
    return pts, face


class _MeshDistance:
    """Distance from query points to a triangle mesh: nearest of k dense surface samples, refined to
    the exact point-to-triangle distance of their faces."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, rng: np.random.Generator, samples: int = 100_000, k: int = 4):
        from scipy.spatial import cKDTree

        self.tri = vertices[faces]
        self.points, self.face = sample_surface(vertices, faces, samples, rng)
        self.tree = cKDTree(self.points)
        self.k = k

    def closest(self, queries: np.ndarray, k: Optional[int] = None, return_face: bool = False, eps: float = 0.0):
        """Closest points [N, 3] on the mesh and distances [N] (and faces [N]), over the faces of the k nearest
        samples (``eps`` > 0: approximately nearest, (1 + eps) times the true sample distance at most; much
        faster for queries far from the surface)."""
        from trimesh.triangles import closest_point

        k = k or self.k
        _, idx = self.tree.query(queries, k=k, eps=eps)
        idx = idx.reshape(len(queries), k)
        best_p, best_d, best_f = None, None, None
        for j in range(k):
            face = self.face[idx[:, j]]
            p = closest_point(self.tri[face], queries)
            d = np.linalg.norm(p - queries, axis=1)
            if best_p is None:
                best_p, best_d, best_f = p, d, face
            else:
                better = d < best_d
                best_p[better], best_d[better], best_f[better] = p[better], d[better], face[better]
        return (best_p, best_d, best_f) if return_face else (best_p, best_d)


@dataclass
class PrimitiveFit:
    shape: str
    similarity: Similarity  # asset frame -> the reference primitive's frame
    chamfer: float  # symmetric Chamfer (mean of the two directions' mean distances), % of the reference bbox diagonal
    asset_to_reference: float  # % of the diagonal
    reference_to_asset: float  # % of the diagonal
    normal_deviation: float  # mean angle (degrees) between asset face normals and the primitive's normals at closest points

    def as_dict(self) -> dict:
        return {"shape": self.shape, "chamfer_pct": self.chamfer, "asset_to_reference_pct": self.asset_to_reference,
                "reference_to_asset_pct": self.reference_to_asset, "normal_deviation_deg": self.normal_deviation,
                "scale": self.similarity.scale, "rotation": self.similarity.rotation.tolist(),
                "translation": self.similarity.translation.tolist()}


def _icp(sim: Similarity, asset_pts: np.ndarray, asset_normals: np.ndarray, ref_pts: np.ndarray, asset: _MeshDistance,
         normals: np.ndarray, shape: str, iters: int, tol: float = 1e-6) -> tuple[Similarity, float]:
    """Symmetric point-to-plane similarity ICP from ``sim``; returns the fit and its mean squared two-way
    point distance (reference units).

    Pairs: every asset sample with its closest point on the primitive (the primitive's normal), every
    primitive sample with its closest point on the asset (the asset face's normal). Each step solves the
    linearised scale / rotation / translation update (7 unknowns) of the point-to-plane residuals, which
    slides along flat faces in a few steps where point-to-point ICP needs dozens."""
    prev = np.inf
    cost = np.inf
    for _ in range(iters):
        x_a = sim.apply(asset_pts)
        q_a, n_a, d_a = primitive_project(shape, x_a)
        near, d_r, face = asset.closest(sim.inverse_apply(ref_pts), k=1, return_face=True, eps=0.5)
        cost = 0.5 * (np.mean(d_a ** 2) + np.mean((sim.scale * d_r) ** 2))
        if prev - cost <= tol * max(cost, 1e-12):
            break
        prev = cost
        x = np.concatenate([x_a, sim.apply(near)])
        q = np.concatenate([q_a, ref_pts])
        n = np.concatenate([n_a, normals[face] @ sim.rotation.T])
        J = np.concatenate([(n * x).sum(1, keepdims=True), np.cross(x, n), n], axis=1)  # d residual / (scale, rotation, translation)
        r = (n * (x - q)).sum(1)
        A = J.T @ J
        step = np.linalg.solve(A + 1e-9 * np.trace(A) * np.eye(7), -J.T @ r)
        delta, omega, tau = step[0], step[1:4], step[4:]
        angle = float(np.linalg.norm(omega))
        R_step = rotation_matrix(omega, angle) if angle > 1e-12 else np.eye(3)
        sim = Similarity(sim.scale * (1 + delta), R_step @ sim.rotation, (1 + delta) * R_step @ sim.translation + tau)
    return sim, float(cost)


def fit_primitive(vertices: np.ndarray, faces: np.ndarray, shape: str, starts: Optional[np.ndarray] = None,
                  icp_points: int = 1500, coarse_iters: int = 12, fine_iters: int = 40, keep: int = 3,
                  eval_points: int = 20_000, seed: int = 0) -> PrimitiveFit:
    """Best similarity alignment of the mesh (vertices [V, 3], faces [F, 3]) onto the reference ``shape``
    and the distances there.

    ICP runs from every start rotation [K, 3, 3] (default: the cube's 24) with scale and centre matched
    by area moments, for ``coarse_iters``; the ``keep`` best continue for ``fine_iters``. Distances
    from asset to primitive are exact (the primitive's SDF); from primitive to asset they are exact
    point-to-triangle distances to the nearest of dense surface samples' faces."""
    rng = np.random.default_rng(seed)
    vertices = np.asarray(vertices, np.float64)
    ref_v, ref_f = primitive_mesh(shape, 96)
    ref_diag = float(np.linalg.norm(ref_v.max(0) - ref_v.min(0)))
    asset = _MeshDistance(vertices, faces, rng)  # dense: the final distances
    coarse = _MeshDistance(vertices, faces, rng, samples=20_000)  # ICP's correspondences: 5x fewer, much faster queries
    normals = face_normals(torch.from_numpy(vertices), torch.from_numpy(np.asarray(faces, np.int64))).numpy()

    def ref_samples(n):
        p, _ = sample_surface(ref_v, ref_f, n, rng)
        return primitive_project(shape, p)[0]  # onto the exact surface

    a_pts, a_face = asset.points[:icp_points], asset.face[:icp_points]  # samples are i.i.d.: any slice is uniform
    r_pts = ref_samples(icp_points)
    # initial scale and centre from the surface samples' moments
    mu_a, mu_r = asset.points.mean(0), r_pts.mean(0)
    rms_a = np.sqrt(((asset.points - mu_a) ** 2).sum(1).mean())
    rms_r = np.sqrt(((r_pts - mu_r) ** 2).sum(1).mean())
    s0 = float(rms_r / max(rms_a, 1e-12))
    starts = cube_rotations() if starts is None else starts
    a_n = normals[a_face]
    fits = [_icp(Similarity(s0, R, mu_r - s0 * R @ mu_a), a_pts, a_n, r_pts, coarse, normals, shape, coarse_iters) for R in starts]
    fits.sort(key=lambda f: f[1])
    best = min((_icp(sim, a_pts, a_n, r_pts, coarse, normals, shape, fine_iters) for sim, _ in fits[:keep]), key=lambda f: f[1])[0]

    # final distances on fresh, denser samples
    idx = rng.choice(len(asset.points), size=min(eval_points, len(asset.points)), replace=False)
    moved = best.apply(asset.points[idx])
    _, ref_n, d_a = primitive_project(shape, moved)
    r_eval = ref_samples(eval_points)
    _, d_r = asset.closest(best.inverse_apply(r_eval))
    d_r = best.scale * d_r
    n_a = normals[asset.face[idx]] @ best.rotation.T
    angle = np.degrees(np.arccos(np.clip((n_a * ref_n).sum(1), -1.0, 1.0)))
    a2r, r2a = 100 * float(d_a.mean()) / ref_diag, 100 * float(d_r.mean()) / ref_diag
    return PrimitiveFit(shape, best, 0.5 * (a2r + r2a), a2r, r2a, float(angle.mean()))


# ---------------------------------------------------------------- rendering


@torch.no_grad()
def render_asset(asset: Asset, cameras, resolution: int, supersample: int = 2, shading: str = "lambertian") -> torch.Tensor:
    """Images [B, 3, R, R] in [0, 1] on white, rendered at R * supersample and area-averaged like the
    prior's training renders, shaded with each camera's point light."""
    from .. import raster as dr
    from ..render.mesh_render import render_mesh

    B, hr = len(cameras), resolution * supersample
    if len(asset.faces) == 0:
        return torch.ones(B, 3, resolution, resolution)
    ctx = dr.get_context("cpu")
    v = torch.from_numpy(asset.vertices).float()
    f = torch.from_numpy(asset.faces).long()
    n = torch.from_numpy(smooth_normals(asset.vertices, asset.faces)).float()
    if asset.uvs is not None:
        # PNG rows -> the rasteriser's texel rows (row r <-> v = (r + 0.5) / T), in [0, 1]
        texture = np.ascontiguousarray(asset.texture[::-1], np.float32) / 255.0
        uvs, tex = torch.from_numpy(np.asarray(asset.uvs, np.float64)).float(), torch.from_numpy(texture).float()
    else:
        # vertex colours (or none: light grey) as flat face colours: one texel per face, every corner of the
        # face at that texel's centre, so linear filtering never blends other faces' colours
        colours = asset.colours / 255.0 if asset.colours is not None else np.full((len(asset.vertices), 3), 0.8)
        Fn = len(asset.faces)
        tex = torch.from_numpy(colours[asset.faces].mean(1)).float().view(1, Fn, 3)
        fv = f.reshape(-1)
        v, n = v[fv], n[fv]
        u = ((torch.arange(Fn) + 0.5) / Fn).repeat_interleave(3)
        uvs = torch.stack([u, torch.full_like(u, 0.5)], -1)
        f = torch.arange(3 * Fn).view(-1, 3)
    images, _ = render_mesh(ctx, v, f, uvs, tex, cameras, hr, shading, normals=n)
    return F.avg_pool2d(images, supersample) if supersample > 1 else images


# ---------------------------------------------------------------- contact sheet


def contact_sheet(rows: Sequence[tuple[str, np.ndarray]], label_width: int = 260) -> np.ndarray:
    """One row per asset: a text label, then its views [K, H, W, 3] uint8. Returns the sheet [H', W', 3] uint8."""
    from PIL import Image, ImageDraw

    if not rows:
        return np.full((1, 1, 3), 255, np.uint8)
    K, H, W, _ = rows[0][1].shape
    sheet = Image.new("RGB", (label_width + K * W, H * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, views) in enumerate(rows):
        for k in range(views.shape[0]):
            sheet.paste(Image.fromarray(views[k]), (label_width + k * W, r * H))
        draw.multiline_text((6, r * H + 6), label, fill=(0, 0, 0), spacing=3)
        draw.line([(0, r * H), (sheet.width, r * H)], fill=(200, 200, 200))
    return np.asarray(sheet)


def rotation_matrix(axis: Sequence[float], angle: float) -> np.ndarray:
    """[3, 3] rotation about ``axis`` by ``angle`` radians (Rodrigues)."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K
