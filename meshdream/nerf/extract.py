"""Density field -> grid (coarse to fine) -> marching cubes -> cleaned mesh with albedo colours."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..config import bounded
from ..errors import MeshdreamError
from ..mesh import clean_mesh, marching_cubes
from ..mesh.solid import border_fraction, clean_solid, otsu_level, signed_grid


@dataclass
class ExtractConfig:
    resolution: int = bounded(128, ge=8, le=1024)  # samples per axis of the final grid
    coarse_resolution: int = bounded(32, ge=4, le=1024)  # first pass; only cells near the surface are refined
    # density iso-level, or "auto": Otsu's split of the log-densities of the coarse pass into empty
    # space and solid (threestudio's "auto" picks the level from the field too)
    threshold: Union[float, Literal["auto"]] = bounded("auto", gt=0)
    min_threshold: float = bounded(1.0, ge=0)  # "auto" never goes below this (a near-empty field stays empty)
    # morphological closing by a ball of this radius, in voxels of the final grid (12 at 128: 0.19 of the
    # [-1, 1] box): seals holes in thin shells and removes handles SDS leaves on a surface (bridges over a
    # groove, narrow tunnels) while a hole the ball passes through stays open (the prior's tori have hole
    # radii 0.20-0.29; measured tori kept their hole up to 12-16 voxels, docs/design.md). Convex shapes are
    # unchanged by any closing; concave dents narrower than the ball are filled, like a cavity fill
    close_radius: int = bounded(12, ge=0, le=64)
    fill_cavities: bool = True  # what the outside cannot reach is inside: no hollow shells
    keep_largest: bool = True  # one part: drop floaters (6-connected parts but the largest)
    # before the closing, drop parts with fewer voxels than this fraction of the largest: a wide closing
    # would bridge a floater near the surface to the body (a handle). 0: keep them until keep_largest
    floater_fraction: float = bounded(0.05, ge=0, le=1)
    smooth_iterations: int = bounded(10, ge=0, le=1000)  # Taubin smoothing of the mesh (volume-preserving): 0 = off
    target_faces: int = bounded(20000, ge=0)  # decimate to about this many faces (0: keep all)
    min_component_fraction: float = bounded(0.05, ge=0, le=1)  # drop floaters smaller than this fraction of the largest part
    # more of the box's faces inside than this: the field fills the box
    max_border_fraction: float = bounded(0.25, ge=0, le=1)


@torch.no_grad()
def _evaluate(fn: Callable[[torch.Tensor], torch.Tensor], pts: torch.Tensor, chunk: int = 131072) -> torch.Tensor:
    return torch.cat([fn(c) for c in pts.split(chunk)]) if len(pts) else pts.new_zeros(0)


@torch.no_grad()
def sample_grid(density: Callable[[torch.Tensor], torch.Tensor], resolution: int, bound: float = 1.0,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Density at every node of a resolution^3 grid spanning [-bound, bound]^3: [R, R, R]."""
    lin = torch.linspace(-bound, bound, resolution, device=device)
    pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).view(-1, 3)
    return _evaluate(density, pts).view(resolution, resolution, resolution)


@torch.no_grad()
def density_grid(density: Callable[[torch.Tensor], torch.Tensor], resolution: int, coarse_resolution: int, threshold: float,
                 bound: float = 1.0, device: torch.device | str = "cpu", coarse: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Density on a resolution^3 grid spanning [-bound, bound]^3, evaluated exactly only near the surface.

    A coarse_resolution^3 pass finds the coarse cells whose corners straddle ``threshold`` (dilated by
    one cell); fine samples inside them are evaluated, all others take the trilinear upsampling of the
    coarse grid (on the same side of the threshold there). ``coarse``: that pass, when the caller already
    has it (sample_grid at coarse_resolution). Returns (grid [N, N, N], evaluations counted from the coarse pass).
    """
    C, N = coarse_resolution, resolution
    if coarse is None:
        coarse = sample_grid(density, C, bound, device)
    if N <= C:
        return coarse if N == C else F.interpolate(coarse[None, None], size=(N,) * 3, mode="trilinear", align_corners=True)[0, 0], C ** 3
    inside = (coarse > threshold).float()
    # a cell straddles when its 8 corners disagree
    mx = F.max_pool3d(inside[None, None], 2, stride=1)[0, 0]
    mn = -F.max_pool3d(-inside[None, None], 2, stride=1)[0, 0]
    active = (mx != mn).float()
    active = F.max_pool3d(active[None, None], 3, stride=1, padding=1)[0, 0] > 0  # dilate: [C-1]^3 cells
    grid = F.interpolate(coarse[None, None], size=(N,) * 3, mode="trilinear", align_corners=True)[0, 0]
    # coarse cell of every fine sample
    idx = torch.arange(N, device=device)
    cell = (idx * (C - 1) // (N - 1)).clamp(max=C - 2)
    fine_active = active[cell][:, cell][:, :, cell]
    # a fine sample on a coarse cell boundary belongs to two cells: include the lower neighbour too
    lower = ((idx * (C - 1)) % (N - 1) == 0) & (idx > 0)
    cell_lo = torch.where(lower, cell - 1, cell).clamp(min=0)
    fine_active |= active[cell_lo][:, cell_lo][:, :, cell_lo]
    sel = fine_active.nonzero()
    lin_f = torch.linspace(-bound, bound, N, device=device)
    pts = lin_f[sel]
    grid[sel[:, 0], sel[:, 1], sel[:, 2]] = _evaluate(density, pts)
    return grid, C ** 3 + len(sel)


def resolve_level(coarse: torch.Tensor, config: ExtractConfig, surface_density: float | None = None) -> float:
    """The density iso-level: config.threshold, or for "auto" the field's own surface density when it
    has one (an sdf field's zero level), else Otsu's level on the log-densities of the coarse grid
    [C, C, C] (at least config.min_threshold)."""
    if config.threshold != "auto":
        return float(config.threshold)
    if surface_density is not None:
        return float(surface_density)
    logd = torch.log(coarse.float().clamp_min(1e-6)).cpu().numpy()
    return max(float(np.exp(otsu_level(logd))), config.min_threshold)


@torch.no_grad()
def extract_mesh(field, config: ExtractConfig, bound: float = 1.0, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One closed mesh of the field's density level set with per-vertex albedo colours.

    density -> grid (coarse to fine) -> inside mask -> closing, cavity fill, largest part (mesh.solid)
    -> signed grid padded with outside -> marching cubes -> Taubin smoothing, decimation (clean_mesh)
    -> albedo at the vertices.
    Returns vertices [V, 3] float32 (world units), faces [F, 3] int64, colours [V, 3] float32 in [0, 1].
    Raises MeshdreamError naming the level when the level set is empty, and naming what happened when
    the solid fills the scene box (the usual SDS collapse: density grown everywhere)."""
    coarse = sample_grid(field.density, config.coarse_resolution, bound, device)  # picks the level, then seeds the fine grid
    level = resolve_level(coarse, config, getattr(field, "surface_density", None))
    grid, _ = density_grid(field.density, config.resolution, config.coarse_resolution, level, bound, device, coarse=coarse)
    peak = float(grid.max())
    if not peak > level:
        raise MeshdreamError(f"the density never exceeds the extraction threshold {round(level, 4)} (peak density "
                             f"{peak:.3g}): the surface is empty. Lower extract.threshold in the config or train longer")
    values = grid.float().cpu().numpy()
    solid, _ = clean_solid(values > level, config.close_radius, config.fill_cavities, config.keep_largest,
                           config.floater_fraction)
    filled = border_fraction(solid)
    if filled > config.max_border_fraction:
        raise MeshdreamError(
            f"the field fills the scene box: {filled:.0%} of the box's faces lie inside the surface at density level {round(level, 4)} "
            f"(allowed: extract.max_border_fraction = {config.max_border_fraction}). SDS grew density everywhere instead of "
            "an object; try another --seed, or raise sparsity_weight / lower guidance.t_max in the coarse config")
    signed = signed_grid(values, level, solid)
    # one layer of outside around the box: a solid that touches the box still gets a closed surface
    signed = np.pad(signed, 1, constant_values=-max(level, 1e-6))
    h = 2 * bound / (config.resolution - 1)
    v, f = marching_cubes(signed, 0.0, bounds=((-bound - h,) * 3, (bound + h,) * 3))
    if len(f) == 0:
        raise MeshdreamError(f"marching cubes found no surface at density threshold {round(level, 4)}")
    v, f, _ = clean_mesh(v, f, None, min_component_fraction=1.0 if config.keep_largest else config.min_component_fraction,
                         merge_distance=0.0, smooth_iterations=config.smooth_iterations, target_faces=config.target_faces or None)
    colours = _evaluate(field.albedo, torch.from_numpy(v).to(device)).float().cpu().numpy()
    return v, f, np.clip(colours, 0, 1)
