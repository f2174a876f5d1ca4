"""Synthetic training images for the embedded prior: coloured primitives, lit, on white.

Each image shows one primitive (sphere, cube, cylinder, cone, torus) centred in [-1, 1]^3, seen by a
camera from :func:`meshdream.render.cameras.sample_cameras` (the same distribution the coarse stage
samples), shaded by :func:`meshdream.render.shading.shade` with the camera sampler's point light, so the
prior learns exactly the kind of images SDS will show it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F

from ..render.cameras import CameraConfig, Cameras, sample_cameras, view_label, view_prompt
from ..render.shading import shade

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
COLOURS = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.12, 0.68, 0.16),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (1.00, 0.50, 0.05),
    "purple": (0.55, 0.15, 0.75),
}


def caption(colour: str, shape: str, azimuth: float, elevation: float) -> str:
    """"a red cube, side view" — the view-dependent prompt the coarse stage will use."""
    article = "an" if colour[0] in "aeiou" else "a"
    return view_prompt(f"{article} {colour} {shape}", view_label(azimuth, elevation))


# --- signed distance functions in the object's local frame (p: [N, 3], size: [N]) ---

def _sdf_sphere(p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - s


def _sdf_cube(p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    half = (0.75 * s)[:, None]
    r = 0.04 * s  # slightly rounded edges: no aliasing sparkle at 32 px
    q = p.abs() - (half - r[:, None])
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0) - r


def _sdf_cylinder(p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    radius, half_h = 0.65 * s, 0.8 * s
    d = torch.stack([torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - radius, p[:, 1].abs() - half_h], dim=-1)
    return d.clamp_min(0).norm(dim=-1) + d.max(dim=-1).values.clamp_max(0)


def _sdf_cone(p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    # capped cone, base radius rb at y=-h, apex at y=+h (Inigo Quilez's exact formula)
    h, rb, ra = 0.85 * s, 0.75 * s, torch.zeros_like(s)
    q = torch.stack([torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2), p[:, 1]], dim=-1)
    k1 = torch.stack([ra, h], dim=-1)
    k2 = torch.stack([ra - rb, 2 * h], dim=-1)
    rsel = torch.where(q[:, 1] < 0, rb, ra)
    ca = torch.stack([q[:, 0] - torch.minimum(q[:, 0], rsel), q[:, 1].abs() - h], dim=-1)
    t = (((k1 - q) * k2).sum(-1) / (k2 * k2).sum(-1)).clamp(0, 1)
    cb = q - k1 + k2 * t[:, None]
    sign = torch.where((cb[:, 0] < 0) & (ca[:, 1] < 0), -1.0, 1.0)
    return sign * torch.minimum((ca * ca).sum(-1), (cb * cb).sum(-1)).sqrt()


def _sdf_torus(p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    major, minor = 0.62 * s, 0.28 * s
    q = torch.stack([torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - major, p[:, 1]], dim=-1)
    return q.norm(dim=-1) - minor


SDFS = (_sdf_sphere, _sdf_cube, _sdf_cylinder, _sdf_cone, _sdf_torus)


def _rotation(yaw: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] local-to-world rotations: tilt about X, then yaw about Y."""
    cy, sy, ct, st = torch.cos(yaw), torch.sin(yaw), torch.cos(tilt), torch.sin(tilt)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    Ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    Rx = torch.stack([one, zero, zero, zero, ct, -st, zero, st, ct], -1).view(-1, 3, 3)
    return Ry @ Rx


@dataclass
class Scene:
    """B primitives: shape index [B], albedo [B, 3], size [B], rotation [B, 3, 3]."""

    shape: torch.Tensor
    albedo: torch.Tensor
    size: torch.Tensor
    rotation: torch.Tensor


def scene_sdf(points: torch.Tensor, scene: Scene, item: torch.Tensor) -> torch.Tensor:
    """Signed distance of world ``points`` [N, 3] to primitive ``item`` [N] of ``scene``."""
    local = torch.einsum("nji,nj->ni", scene.rotation[item], points)  # R^T p
    size = scene.size[item]
    shape = scene.shape[item]
    out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
    for k, fn in enumerate(SDFS):
        m = shape == k
        if m.any():
            out[m] = fn(local[m], size[m])
    return out


def render_scene(scene: Scene, cameras: Cameras, resolution: int, supersample: int = 2, shading: Sequence[str] | None = None,
                 steps: int = 48) -> torch.Tensor:
    """Sphere-trace the primitives; returns images [B, 3, R, R] in [0, 1] on white, anti-aliased by
    rendering at ``supersample`` x the resolution and area-averaging."""
    return render_field(lambda p, it: scene_sdf(p, scene, it), lambda p, it: scene.albedo[it], cameras, resolution,
                        supersample, shading, steps)


def render_field(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 albedo: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], cameras: Cameras, resolution: int,
                 supersample: int = 2, shading: Sequence[str] | None = None, steps: int = 48,
                 radius: float | torch.Tensor = 1.2) -> torch.Tensor:
    """Sphere-trace B signed distance fields, one per camera; images [B, 3, R, R] in [0, 1] on white.

    ``distance(points [N, 3], item [N]) -> [N]`` is a lower bound of the distance of each point to
    object ``item``'s surface (exact SDFs, or SDFs of non-uniformly scaled parts times their smallest
    scale); ``albedo(points, item) -> [N, 3]``. Objects lie inside the sphere of ``radius`` about the
    origin (a number, or one per object [B]: rays that miss it are not traced); images
    are rendered at ``supersample`` x the resolution and area-averaged.
    """
    B = len(cameras)
    hr = resolution * supersample
    o, d = cameras.rays(hr, hr)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    item = torch.arange(B).repeat_interleave(hr * hr)
    # start where the ray enters the bounding sphere
    b = (o * d).sum(-1)
    r = radius[item] if torch.is_tensor(radius) else radius
    c = (o * o).sum(-1) - r ** 2
    disc = b * b - c
    alive = disc > 0
    t = (-b - disc.clamp_min(0).sqrt()).clamp_min(0)
    t_far = -b + disc.clamp_min(0).sqrt()
    hit = torch.zeros_like(alive)
    idx = alive.nonzero().squeeze(1)
    for _ in range(steps):
        if idx.numel() == 0:
            break
        p = o[idx] + d[idx] * t[idx, None]
        dist = distance(p, item[idx])
        t[idx] += dist * 0.95
        done = dist < 1e-3
        hit[idx[done]] = True
        keep = (~done) & (t[idx] < t_far[idx])
        idx = idx[keep]
    image = torch.ones(B * hr * hr, 3)
    hi = hit.nonzero().squeeze(1)
    if hi.numel():
        p = o[hi] + d[hi] * t[hi, None]
        it = item[hi]
        eps = 1e-3
        grads = []
        for a in range(3):  # central differences: unit outward normals
            e = torch.zeros(3)
            e[a] = eps
            grads.append(distance(p + e, it) - distance(p - e, it))
        n = torch.stack(grads, -1)
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        base = albedo(p, it)
        modes = shading if shading is not None else ["lambertian"] * B
        colour = torch.empty(hi.numel(), 3)
        for mode in set(modes):
            sel = torch.tensor([modes[i] == mode for i in range(B)])[it]
            colour[sel] = shade(base[sel], n[sel], p[sel], cameras.light_position[it[sel]], mode)
        image[hi] = colour
    image = image.view(B, hr, hr, 3).permute(0, 3, 1, 2)
    return F.avg_pool2d(image, supersample) if supersample > 1 else image


def sample_scenes(n: int, generator: torch.Generator, colour_jitter: float = 0.06) -> tuple[Scene, List[int], List[str]]:
    """Random primitives: returns the scene, shape indices and colour names."""
    shape = torch.randint(0, len(SHAPES), (n,), generator=generator)
    names = list(COLOURS)
    colour = torch.randint(0, len(names), (n,), generator=generator)
    base = torch.tensor([COLOURS[names[i]] for i in colour.tolist()])
    albedo = (base + colour_jitter * (torch.rand(n, 3, generator=generator) - 0.5) * 2).clamp(0, 1)
    size = 0.6 + 0.25 * torch.rand(n, generator=generator)
    yaw = torch.rand(n, generator=generator) * 2 * math.pi
    tilt = torch.rand(n, generator=generator) * math.radians(20)
    tilt = torch.where(shape == 0, torch.zeros_like(tilt), tilt)
    scene = Scene(shape=shape, albedo=albedo, size=size, rotation=_rotation(yaw, tilt))
    return scene, shape.tolist(), [names[i] for i in colour.tolist()]


def render_dataset(n: int, seed: int, resolution: int = 32, albedo_fraction: float = 0.25, batch: int = 256,
                   camera_config: CameraConfig | None = None):
    """Render ``n`` images. Returns (images uint8 [n, R, R, 3], captions, shape ids [n], colour ids [n])."""
    g = torch.Generator().manual_seed(seed)
    cfg = camera_config or CameraConfig()
    images, captions, shapes, colours = [], [], [], []
    names = list(COLOURS)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        scene, shape_ids, colour_names = sample_scenes(m, g)
        cams = sample_cameras(m, cfg, g)
        modes = ["albedo" if float(u) < albedo_fraction else "lambertian" for u in torch.rand(m, generator=g)]
        img = render_scene(scene, cams, resolution, shading=modes)
        images.append((img.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8))
        for i in range(m):
            captions.append(caption(colour_names[i], SHAPES[shape_ids[i]], float(cams.azimuth[i]), float(cams.elevation[i])))
        shapes += shape_ids
        colours += [names.index(c) for c in colour_names]
    return torch.cat(images).numpy(), captions, shapes, colours
