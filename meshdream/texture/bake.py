"""Bake a function of surface position (the coarse NeRF's albedo) into a UV texture."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import raster as dr


def uv_positions(ctx: dr.RasterContext, positions: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World position of every texel [size, size, 3] and its coverage mask [size, size] by rasterising
    the UV layout (uv * 2 - 1 as clip x, y): texel row r <-> v = (r + 0.5) / size."""
    clip = torch.cat([uvs * 2 - 1, torch.zeros_like(uvs[:, :1]), torch.ones_like(uvs[:, :1])], dim=-1).unsqueeze(0)
    tri = dr.int32_triangles(faces, min(len(positions), len(uvs)), name="faces")
    rast, _ = dr.rasterize(ctx, clip.contiguous(), tri, (size, size))
    pos, _ = dr.interpolate(positions.unsqueeze(0), rast, tri, ctx=ctx)
    return pos[0], rast[0, ..., 3] > 0


def dilate(texture: torch.Tensor, mask: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """Grow charts outwards by averaging covered neighbours, so bilinear lookups at seams and mip-free
    minification never see the empty gutter; the rest takes the mean colour. texture [S, S, C]."""
    tex = texture.permute(2, 0, 1).unsqueeze(0) * mask
    m = mask.to(texture.dtype)[None, None]
    kernel = torch.ones(1, 1, 3, 3, dtype=texture.dtype, device=texture.device)
    for _ in range(iterations):
        total = F.conv2d(tex, kernel.expand(tex.shape[1], 1, 3, 3), padding=1, groups=tex.shape[1])
        count = F.conv2d(m, kernel, padding=1)
        grow = (count > 0) & (m == 0)
        tex = torch.where(grow, total / count.clamp_min(1), tex)
        m = torch.where(grow, torch.ones_like(m), m)
    out = tex[0].permute(1, 2, 0)
    if bool((m == 0).any()):
        mean = texture[mask].mean(0) if bool(mask.any()) else texture.new_full((texture.shape[-1],), 0.5)
        out = torch.where(m[0, 0].bool().unsqueeze(-1), out, mean)
    return out


@torch.no_grad()
def bake_texture(ctx: dr.RasterContext, positions: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, size: int,
                 colour_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Texture [size, size, 3] with colour_fn(world points [N, 3]) -> [N, 3] evaluated at every texel."""
    pos, mask = uv_positions(ctx, positions, faces, uvs, size)
    tex = torch.zeros(size, size, 3, dtype=positions.dtype, device=positions.device)
    if bool(mask.any()):
        pts = pos[mask]
        tex[mask] = torch.cat([colour_fn(c) for c in pts.split(65536)]).to(tex.dtype)
    return dilate(tex, mask)


@torch.no_grad()
def bake_vertex_colours(ctx: dr.RasterContext, colours: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, size: int) -> torch.Tensor:
    """Texture [size, size, 3] interpolating per-vertex colours [V, 3] across each face."""
    col, mask = uv_positions(ctx, colours, faces, uvs, size)
    return dilate(col, mask)
