"""Volume rendering of the NeRF field along camera rays, with stratified samples inside the scene box
and empty-space skipping through an occupancy grid."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..render.shading import shade


# a sample gets a shading normal (4 density evaluations, with gradients) when its weight in the
# gradient-free first pass exceeds this; the others shade as ambient only. 1e-2 keeps 95% of the
# weight mass with normals on 54% of the samples: -16% coarse CPU vs 1e-3, equal GLB metrics (docs/performance.md)
NORMALS_MIN_WEIGHT = 1e-2


@dataclass
class RenderOutput:
    """Per ray: rgb [R, 3], opacity [R], depth [R]; per sample (for regularisers): weights [R, S],
    normals [R, S, 3] (None when not shaded), dirs [R, 3]."""

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: torch.Tensor
    normals: Optional[torch.Tensor]
    dirs: torch.Tensor
    evaluated: int  # field evaluations spent (after empty-space skipping)


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry and exit distances [R] of rays with the cube [-bound, bound]^3, and a hit mask [R]."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) * inv
    t1 = (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far, far > near


class OccupancyGrid:
    """A coarse grid of density estimates (EMA of the max seen); samples in cells below the threshold
    are skipped. ``occupied(x)`` is conservative: a cell is empty only after an update saw it empty.
    The grid lives on ``device``, the field's: probes go to the field there and masks index there."""

    def __init__(self, resolution: int = 32, bound: float = 1.0, decay: float = 0.9, threshold: float = 0.1,
                 device: torch.device | str = "cpu"):
        self.resolution, self.bound, self.decay, self.threshold = resolution, bound, decay, threshold
        self.density = torch.full((resolution,) * 3, float("inf"), device=device)  # unknown = occupied
        self._mask: torch.Tensor | None = None

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x / self.bound + 1) / 2 * self.resolution).long().clamp(0, self.resolution - 1)
        return (u[..., 0] * self.resolution + u[..., 1]) * self.resolution + u[..., 2]

    def mask(self) -> torch.Tensor:
        """[R, R, R] bool: cells above the threshold, dilated by one cell, so a cell whose single random
        probe missed a thin shell next to an occupied neighbour is still rendered (errs towards sampling)."""
        if self._mask is None:
            occ = (self.density > self.threshold).float()[None, None]
            self._mask = torch.nn.functional.max_pool3d(occ, 3, stride=1, padding=1)[0, 0] > 0
        return self._mask

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask().view(-1)[self.cell_index(x)]

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Evaluate density at a random point in every cell and blend it into the estimates."""
        R, device = self.resolution, self.density.device
        idx = torch.stack(torch.meshgrid(*(torch.arange(R),) * 3, indexing="ij"), -1).view(-1, 3).float()
        # drawn on the CPU from the run's generator (reproducible on any device), then moved
        pts = (((idx + torch.rand(idx.shape, generator=generator)) / R * 2 - 1) * self.bound).to(device)
        d = torch.cat([density_fn(chunk) for chunk in pts.split(65536)]).view(R, R, R)
        old = torch.where(torch.isinf(self.density), d, self.density)
        self.density = torch.maximum(old * self.decay, d)
        self._mask = None

    def state_dict(self) -> dict:
        return {"density": self.density.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        density = state["density"]
        if not isinstance(density, torch.Tensor) or density.shape != self.density.shape:
            # the grid's cells are indexed by this grid's resolution: another shape would index past it
            raise ValueError(f"occupancy grid of shape {tuple(getattr(density, 'shape', ()))}, expected {tuple(self.density.shape)}")
        self.density = density.to(self.density.device, self.density.dtype).clone()
        self._mask = None

    @property
    def occupied_fraction(self) -> float:
        return float(self.mask().float().mean())


def render_rays(
    field,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    *,
    num_samples: int,
    bound: float,
    shading: str,
    light_position: torch.Tensor,
    background: torch.Tensor,
    occupancy: OccupancyGrid | None = None,
    generator: torch.Generator | None = None,
    with_normals: bool = True,
    ambient: float = 0.3,
    diffuse: float = 0.7,
) -> RenderOutput:
    """Render rays origins, dirs [R, 3] (unit dirs). light_position [R, 3]; background [R, 3].

    Stratified sampling: S samples per ray, one uniform in each of S equal bins between the ray's
    entry and exit of the scene box (jitter from ``generator``; no jitter when it is None).
    """
    R, S = origins.shape[0], num_samples
    device = origins.device
    near, far, hit = ray_box(origins, dirs, bound)
    far = torch.where(hit, far, near + 1e-3)
    jitter = torch.rand(R, S, generator=generator).to(device) if generator is not None else torch.full((R, S), 0.5, device=device)
    bins = (torch.arange(S, device=device, dtype=origins.dtype) + jitter) / S  # [R, S]
    t = near[:, None] + (far - near)[:, None] * bins
    delta = (far - near)[:, None] / S * torch.ones_like(t)
    pts = origins[:, None, :] + dirs[:, None, :] * t[..., None]  # [R, S, 3]
    flat = pts.reshape(-1, 3)
    active = hit[:, None].expand(R, S).reshape(-1)
    if occupancy is not None:
        active = active & occupancy.occupied(flat)
    # pass 1, without gradients: densities of the candidates give each sample's transmittance; samples
    # hidden behind the surface (transmittance < 1e-3) add nothing to the image and are dropped
    cand = active.nonzero().squeeze(1)
    if cand.numel():
        with torch.no_grad():
            d0 = torch.zeros(R * S, device=device, dtype=origins.dtype)
            d0[cand] = field.density(flat[cand])
            a0 = 1 - torch.exp(-d0.view(R, S) * delta)
            t0 = torch.cumprod(torch.cat([torch.ones(R, 1, device=device, dtype=a0.dtype), 1 - a0 + 1e-10], 1), 1)[:, :-1]
            active = active & (t0.reshape(-1) > 1e-3)
            visible = (a0 * t0).reshape(-1) > NORMALS_MIN_WEIGHT  # samples that show in the image: they get normals
    idx = active.nonzero().squeeze(1)
    density = torch.zeros(R * S, device=device, dtype=origins.dtype)
    colour = torch.zeros(R * S, 3, device=device, dtype=origins.dtype)
    normals = None
    if idx.numel():
        p = flat[idx]
        d, albedo = field(p)
        density = density.index_put((idx,), d)
        shaded_normals = None
        if with_normals or shading != "albedo":
            # normals cost 4 density evaluations: only for samples that visibly contribute
            sub = visible[idx].nonzero().squeeze(1) if cand.numel() else idx[:0]
            shaded_normals = torch.zeros_like(p)
            if sub.numel():
                shaded_normals = shaded_normals.index_put((sub,), field.normals(p[sub]))
            normals = torch.zeros(R * S, 3, device=device, dtype=origins.dtype).index_put((idx,), shaded_normals).view(R, S, 3)
        light = light_position[:, None, :].expand(R, S, 3).reshape(-1, 3)[idx]
        c = albedo if shading == "albedo" else shade(albedo, shaded_normals, p, light, shading, ambient, diffuse)
        colour = colour.index_put((idx,), c)
    density = density.view(R, S)
    alpha = 1 - torch.exp(-density * delta)
    trans = torch.cumprod(torch.cat([torch.ones(R, 1, device=device, dtype=alpha.dtype), 1 - alpha + 1e-10], dim=1), dim=1)[:, :-1]
    weights = alpha * trans  # [R, S]
    opacity = weights.sum(-1)
    rgb = (weights[..., None] * colour.view(R, S, 3)).sum(1) + (1 - opacity)[:, None] * background
    depth = (weights * t).sum(-1)
    return RenderOutput(rgb=rgb, opacity=opacity, depth=depth, weights=weights, normals=normals, dirs=dirs, evaluated=int(idx.numel()))


def render_cameras(field, cameras, resolution: int, *, num_samples: int, bound: float, shading: str,
                   background: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
                   occupancy: OccupancyGrid | None = None, generator: torch.Generator | None = None, with_normals: bool = True,
                   ambient: float = 0.3, diffuse: float = 0.7, chunk: int = 4096) -> tuple[torch.Tensor, RenderOutput]:
    """Render B cameras at resolution x resolution. Returns images [B, 3, H, W] (row 0 = top) and the
    per-ray output. background: a [3] colour, or a function of the ray directions [R, 3] -> [R, 3]
    (a learned background). Without gradients, rays go through in chunks of ``chunk``."""
    o, d = cameras.rays(resolution, resolution)
    B = len(cameras)
    light = cameras.light_position[:, None, :].expand(B, resolution * resolution, 3).reshape(-1, 3)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    bg = background(d) if callable(background) else background.to(o.dtype).expand(B * resolution * resolution, 3)
    kwargs = dict(num_samples=num_samples, bound=bound, shading=shading, occupancy=occupancy, generator=generator,
                  with_normals=with_normals, ambient=ambient, diffuse=diffuse)
    if torch.is_grad_enabled() or len(o) <= chunk:
        out = render_rays(field, o, d, light_position=light, background=bg, **kwargs)
    else:  # previews and turntables: bounded memory, no per-sample outputs kept
        parts = [render_rays(field, o[i:i + chunk], d[i:i + chunk], light_position=light[i:i + chunk], background=bg[i:i + chunk],
                             **kwargs) for i in range(0, len(o), chunk)]
        out = RenderOutput(rgb=torch.cat([p.rgb for p in parts]), opacity=torch.cat([p.opacity for p in parts]),
                           depth=torch.cat([p.depth for p in parts]), weights=parts[0].weights[:0], normals=None, dirs=d,
                           evaluated=sum(p.evaluated for p in parts))
    images = out.rgb.view(B, resolution, resolution, 3).permute(0, 3, 1, 2)
    return images, out


def frame_border_opacity(opacity: torch.Tensor) -> float:
    """Mean opacity [0, 1] of the outermost pixel ring of images' opacity [B, H, W]: ~0 for an object
    framed on its background, ~1 when the field fills the frame (the SDS collapse where density grows
    everywhere and the prompt's colour covers the background)."""
    return float(border_opacity_loss(opacity.detach().float(), 1))


def border_opacity_loss(opacity: torch.Tensor, width: int) -> torch.Tensor:
    """Mean opacity of the outer ``width``-pixel ring of opacity [B, H, W], differentiable: penalises a field
    that reaches the edge of the views (the object must lie inside the frame, as every training image of a
    text-to-image prior shows it), the early sign of the fill-the-frame collapse."""
    H, W = opacity.shape[1:]
    inner = opacity[:, width:H - width, width:W - width]
    return (opacity.sum((1, 2)) - inner.sum((1, 2))).mean() / (H * W - inner[0].numel())


def orientation_loss(out: RenderOutput) -> torch.Tensor:
    """DreamFusion: penalise visible normals facing away from the camera, sum_i w_i max(0, n_i . d)^2."""
    if out.normals is None:
        return out.rgb.new_zeros(())
    facing_away = (out.normals * out.dirs[:, None, :]).sum(-1).clamp_min(0)
    return (out.weights.detach() * facing_away ** 2).sum(-1).mean()


def sparsity_loss(out: RenderOutput) -> torch.Tensor:
    """Opacity sparsity (threestudio): mean sqrt(opacity^2 + 0.01), pushes rays to empty or solid."""
    return torch.sqrt(out.opacity ** 2 + 0.01).mean()


def surface_points(cams, rendered, resolution: int, min_opacity: float = 0.5) -> torch.Tensor:
    """Where the rays of an SDS render meet the surface: origin + depth * dir for the rays at least
    min_opacity opaque, [P, 3], detached (they choose where regularisers look, they are not trained)."""
    # every ray of a view starts at its camera (render_cameras' order: camera-major, then pixels)
    o = cams.position.repeat_interleave(resolution * resolution, dim=0).to(rendered.dirs.device)
    hit = rendered.opacity.detach() > min_opacity
    depth = rendered.depth.detach()[hit] / rendered.opacity.detach()[hit]  # the weights' mean distance
    return o[hit] + rendered.dirs[hit] * depth[:, None]
