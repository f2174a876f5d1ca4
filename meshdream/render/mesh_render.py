"""Render a textured mesh through the rasteriser API (nvdiffrast on CUDA, our C++ backend on CPU)."""
from __future__ import annotations

import torch

from .. import raster as dr
from .cameras import Cameras
from ..mesh.geometry import vertex_normals
from .shading import shade


def render_mesh(ctx: dr.RasterContext, vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, texture: torch.Tensor,
                cameras: Cameras, resolution: int, shading: str = "albedo", background=(1.0, 1.0, 1.0), ambient: float = 0.3,
                diffuse: float = 0.7, normals: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shaded images [B, 3, H, W] (row 0 = top) and coverage [B, 1, H, W].

    vertices [V, 3] world, faces [F, 3] (int), uvs [V, 2] (texture row r <-> v = (r + 0.5) / TH),
    texture [TH, TW, 3] in [0, 1]; normals [V, 3] (default: area-weighted from the faces).
    """
    B = len(cameras)
    tri = faces.to(torch.int32)
    hom = torch.cat([vertices, torch.ones_like(vertices[:, :1])], dim=-1)  # [V, 4]
    pos = torch.einsum("bij,vj->bvi", cameras.mvp().to(vertices.dtype), hom).contiguous()  # [B, V, 4]
    rast, rast_db = dr.rasterize(ctx, pos, tri, (resolution, resolution))
    if dr.capabilities(ctx).mipmaps:
        # trilinear mipmapping from the uv derivatives: a 1024 px texture seen at 64 px does not alias
        # (nvdiffrast; the CPU backends have no image-space derivatives)
        uv, uv_da = dr.interpolate(uvs.unsqueeze(0), rast, tri, rast_db=rast_db, diff_attrs="all", ctx=ctx)
        albedo = dr.texture(texture.unsqueeze(0).contiguous(), uv, uv_da, filter_mode="linear-mipmap-linear", boundary_mode="clamp",
                             ctx=ctx)
    else:
        uv, _ = dr.interpolate(uvs.unsqueeze(0), rast, tri, ctx=ctx)
        albedo = dr.texture(texture.unsqueeze(0), uv, filter_mode="linear", boundary_mode="clamp", ctx=ctx)
    if shading == "albedo":
        colour = albedo
    else:
        n = vertex_normals(vertices, faces.long()) if normals is None else normals
        attrs = torch.cat([vertices, n], dim=-1).unsqueeze(0)
        interp, _ = dr.interpolate(attrs, rast, tri, ctx=ctx)
        p, nn = interp[..., :3], interp[..., 3:]
        nn = nn / nn.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        light = cameras.light_position.to(vertices.dtype).view(B, 1, 1, 3)
        colour = shade(albedo, nn, p, light, shading, ambient, diffuse)
    mask = (rast[..., 3:4] > 0).to(colour.dtype)
    bg = torch.as_tensor(background, dtype=colour.dtype, device=colour.device).view(1, 1, 1, 3)
    colour = colour * mask + bg * (1 - mask)
    colour = dr.antialias(colour.contiguous(), rast, pos, tri, ctx=ctx)
    # rasterised rows start at the bottom (y = -1): flip to images with row 0 at the top
    images = torch.flip(colour, dims=[1]).permute(0, 3, 1, 2)
    alpha = torch.flip(mask, dims=[1]).permute(0, 3, 1, 2)
    return images, alpha
