"""Density field -> grid (coarse to fine) -> marching cubes -> cleaned mesh with albedo colours."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import bounded
from ..errors import MeshdreamError
from ..mesh import clean_mesh, marching_cubes


@dataclass
class ExtractConfig:
    resolution: int = bounded(128, ge=8, le=1024)  # samples per axis of the final grid
    coarse_resolution: int = bounded(32, ge=4, le=1024)  # first pass; only cells near the surface are refined
    threshold: float = 4.0  # density iso-level
    target_faces: int = bounded(20000, ge=0)  # decimate to about this many faces (0: keep all)
    min_component_fraction: float = bounded(0.05, ge=0, le=1)  # drop floaters smaller than this fraction of the largest part


@torch.no_grad()
def _evaluate(fn: Callable[[torch.Tensor], torch.Tensor], pts: torch.Tensor, chunk: int = 131072) -> torch.Tensor:
    return torch.cat([fn(c) for c in pts.split(chunk)]) if len(pts) else pts.new_zeros(0)


@torch.no_grad()
def density_grid(density: Callable[[torch.Tensor], torch.Tensor], resolution: int, coarse_resolution: int, threshold: float,
                 bound: float = 1.0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, int]:
    """Density on a resolution^3 grid spanning [-bound, bound]^3, evaluated exactly only near the surface.

    A coarse_resolution^3 pass finds the coarse cells whose corners straddle ``threshold`` (dilated by
    one cell); fine samples inside them are evaluated, all others take the trilinear upsampling of the
    coarse grid (on the same side of the threshold there). Returns (grid [N, N, N], fine evaluations).
    """
    C, N = coarse_resolution, resolution
    lin = torch.linspace(-bound, bound, C, device=device)
    coarse_pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).view(-1, 3)
    coarse = _evaluate(density, coarse_pts).view(C, C, C)
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


@torch.no_grad()
def extract_mesh(field, config: ExtractConfig, bound: float = 1.0, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mesh of the field's density level set with per-vertex albedo colours.

    Returns vertices [V, 3] float32 (world units), faces [F, 3] int64, colours [V, 3] float32 in [0, 1].
    Raises MeshdreamError naming the threshold when the level set is empty."""
    grid, _ = density_grid(field.density, config.resolution, config.coarse_resolution, config.threshold, bound, device)
    peak = float(grid.max())
    if not peak > config.threshold:
        raise MeshdreamError(f"the density never exceeds the extraction threshold {config.threshold} (peak density "
                             f"{peak:.3g}): the surface is empty. Lower extract.threshold in the config or train longer")
    v, f = marching_cubes(grid.float().cpu().numpy(), config.threshold, bounds=((-bound,) * 3, (bound,) * 3))
    if len(f) == 0:
        raise MeshdreamError(f"marching cubes found no surface at density threshold {config.threshold}")
    colours = _evaluate(field.albedo, torch.from_numpy(v).to(device)).float().cpu().numpy()
    v, f, colours = clean_mesh(v, f, colours, min_component_fraction=config.min_component_fraction,
                               target_faces=config.target_faces or None)
    return v, f, np.clip(colours, 0, 1)
