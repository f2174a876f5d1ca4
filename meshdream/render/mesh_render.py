"""Render a textured mesh through the rasteriser API (nvdiffrast on CUDA, our C++ backend on CPU).

Two steps, composed as nvdiffrast's ops are: :func:`rasterize_mesh` rasterises a mesh for B cameras and
interpolates the surface attributes asked for (texture colour, world positions, unit normals);
:func:`shade_fragments` shades them with a point light per camera, puts them on a background, antialiases
the silhouettes and flips the rows so that row 0 is the top. :func:`render_mesh` (refine, asset metrics) and
the turntable (:mod:`meshdream.stages.render`) are both these two steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .. import raster as dr
from .cameras import Cameras
from ..mesh.geometry import vertex_normals
from .shading import shade


@dataclass(frozen=True)
class Fragments:
    """A mesh rasterised for B cameras at H x W pixels, rows from the bottom (y = -1) as the rasteriser gives them.

    rast [B, H, W, 4] (u, v, z/w, triangle id + 1; zero where empty), pos [B, V, 4] clip-space vertices,
    tri [F, 3] int32; albedo [B, H, W, 3] texture colour, points [B, H, W, 3] world positions and normals
    [B, H, W, 3] unit world normals, each None unless :func:`rasterize_mesh` was asked for it. When only the
    covered pixels were kept, ``pixels`` holds their M flat indices into B * H * W and the three are
    [1, 1, M, 3] instead (an image one row high, as ``dr.texture`` takes it).
    """

    ctx: dr.RasterContext
    rast: torch.Tensor
    pos: torch.Tensor
    tri: torch.Tensor
    albedo: torch.Tensor | None = None
    points: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    pixels: torch.Tensor | None = None


def _keep(image: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
    """image [B, H, W, C] -> [1, 1, M, C] at the flat pixel indices ``pixels`` [M]; all of it when pixels is None."""
    if pixels is None:
        return image
    return image.reshape(-1, image.shape[-1]).index_select(0, pixels).view(1, 1, -1, image.shape[-1])


def rasterize_mesh(ctx: dr.RasterContext, vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, resolution: int, *,
                   uvs: torch.Tensor | None = None, texture: torch.Tensor | None = None, surface: bool = False,
                   normals: torch.Tensor | None = None, covered_only: bool = False) -> Fragments:
    """Rasterise the mesh for ``cameras`` at ``resolution`` x ``resolution`` and interpolate what is asked for.

    vertices [V, 3] world, faces [F, 3] (int). With uvs [V, 2] and texture [TH, TW, 3] in [0, 1] (texture row
    r <-> v = (r + 0.5) / TH): the albedo. With ``surface``: world positions and unit normals, from normals
    [V, 3] (default: area-weighted from the faces). ``covered_only`` keeps the covered pixels alone (see
    :class:`Fragments`): texturing and shading then skip the background, two thirds of a turntable frame (on
    CUDA, finding those pixels costs a device sync).
    """
    tri = dr.int32_triangles(faces, len(vertices), name="faces")
    hom = torch.cat([vertices, torch.ones_like(vertices[:, :1])], dim=-1)  # [V, 4]
    pos = torch.einsum("bij,vj->bvi", cameras.mvp().to(vertices.dtype), hom).contiguous()  # [B, V, 4]
    rast, rast_db = dr.rasterize(ctx, pos, tri, (resolution, resolution))
    albedo = points = unit = None
    pixels = (rast[..., 3] > 0).view(-1).nonzero().squeeze(1) if covered_only else None
    if texture is not None:
        if dr.capabilities(ctx).mipmaps:
            # trilinear mipmapping from the uv derivatives: a 1024 px texture seen at 64 px does not alias
            # (nvdiffrast; the CPU backends have no image-space derivatives)
            uv, uv_da = dr.interpolate(uvs.unsqueeze(0), rast, tri, rast_db=rast_db, diff_attrs="all", ctx=ctx)
            albedo = dr.texture(texture.unsqueeze(0).contiguous(), _keep(uv, pixels), _keep(uv_da, pixels),
                                filter_mode="linear-mipmap-linear", boundary_mode="clamp", ctx=ctx)
        else:
            uv, _ = dr.interpolate(uvs.unsqueeze(0), rast, tri, ctx=ctx)
            albedo = dr.texture(texture.unsqueeze(0), _keep(uv, pixels), filter_mode="linear", boundary_mode="clamp", ctx=ctx)
    if surface:
        # the default normals are made after the texture lookup: backward then sums the vertices' gradients
        # in the order it always has, and refine's results stay the same to the bit
        normals = vertex_normals(vertices, faces.long()) if normals is None else normals
        interp, _ = dr.interpolate(torch.cat([vertices, normals], dim=-1).unsqueeze(0), rast, tri, ctx=ctx)
        interp = _keep(interp, pixels)
        points, n = interp[..., :3], interp[..., 3:]
        unit = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return Fragments(ctx, rast, pos, tri, albedo, points, unit, pixels)


def shade_fragments(fragments: Fragments, shading: str = "albedo", lights: torch.Tensor | None = None, ambient: float = 0.3,
                    diffuse: float = 0.7, background: Sequence[float] = (1.0, 1.0, 1.0),
                    normals_image: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, H, W, 3] (row 0 = top), or [B, H, W, 6] with ``normals_image``, and coverage [B, H, W, 1].

    Channels 0-2: the albedo shaded (:func:`shade`, mode ``shading``) with a point light per camera at ``lights``
    [B, 3] world (unused for "albedo"). Channels 3-5 (``normals_image``): the unit world normals as colours,
    (x, y, z) -> (r, g, b) = n / 2 + 1/2. Both lie on ``background``, silhouettes antialiased. Shading and
    the normals image need the fragments' surface (:func:`rasterize_mesh` with ``surface``).
    """
    f = fragments
    B, H, W = f.rast.shape[:3]
    if shading == "albedo":
        colour = f.albedo
    else:
        light = lights.to(f.pos.dtype)
        # one light per camera, or per kept pixel: its camera is its flat index // (H * W)
        light = light.view(B, 1, 1, 3) if f.pixels is None else light[f.pixels // (H * W)].view(1, 1, -1, 3)
        colour = shade(f.albedo, f.normals, f.points, light, shading, ambient, diffuse)
    if normals_image:  # one antialias pass serves both images
        colour = torch.cat([colour, f.normals * 0.5 + 0.5], dim=-1)
    C = colour.shape[-1]
    mask = (f.rast[..., 3:4] > 0).to(colour.dtype)
    bg = torch.as_tensor(background, dtype=colour.dtype, device=colour.device).repeat(C // 3)
    if f.pixels is None:
        colour = colour * mask + bg.view(1, 1, 1, C) * (1 - mask)
    else:
        canvas = colour.new_empty(B * H * W, C)
        canvas[:] = bg
        colour = canvas.index_copy_(0, f.pixels, colour.view(-1, C)).view(B, H, W, C)
    colour = dr.antialias(colour.contiguous(), f.rast, f.pos, f.tri, ctx=f.ctx)
    # rasterised rows start at the bottom (y = -1): flip to images with row 0 at the top
    return torch.flip(colour, dims=[1]), torch.flip(mask, dims=[1])


def render_mesh(ctx: dr.RasterContext, vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, texture: torch.Tensor,
                cameras: Cameras, resolution: int, shading: str = "albedo", background=(1.0, 1.0, 1.0), ambient: float = 0.3,
                diffuse: float = 0.7, normals: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shaded images [B, 3, H, W] (row 0 = top) and coverage [B, 1, H, W], lit by each camera's light_position.

    vertices [V, 3] world, faces [F, 3] (int), uvs [V, 2] (texture row r <-> v = (r + 0.5) / TH),
    texture [TH, TW, 3] in [0, 1]; normals [V, 3] (default: area-weighted from the faces).
    """
    fragments = rasterize_mesh(ctx, vertices, faces, cameras, resolution, uvs=uvs, texture=texture,
                               surface=shading != "albedo", normals=normals)  # albedo needs no lighting
    images, alpha = shade_fragments(fragments, shading, cameras.light_position, ambient, diffuse, background)
    return images.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2)
