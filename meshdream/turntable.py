"""A turntable GIF of a RUN's textured mesh."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from . import raster as dr
from .cameras import turntable_cameras
from .checkpoint import atomic_write_bytes
from .mesh_render import render_mesh


@torch.no_grad()
def render_turntable(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray, frames: int = 24,
                     resolution: int = 160, elevation: float = 15.0, distance: float = 2.5) -> np.ndarray:
    """Frames [N, H, W, 3] uint8 of the mesh turning once; texture [T, T, 3] in [0, 1] with row r <-> v = (r + 0.5) / T."""
    ctx = dr.get_context("cpu")
    cams = turntable_cameras(frames, elevation_deg=elevation, distance=distance)
    v, f, uv = (torch.from_numpy(np.ascontiguousarray(a)) for a in (vertices.astype(np.float32), faces.astype(np.int64),
                                                                     uvs.astype(np.float32)))
    tex = torch.from_numpy(np.ascontiguousarray(texture, dtype=np.float32))
    out = []
    for i in range(0, frames, 8):
        images, _ = render_mesh(ctx, v, f, uv, tex, cams[i:i + 8], resolution, "lambertian")
        out.append((images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    return np.concatenate(out)


def save_gif(frames: np.ndarray, path: Path, fps: int = 12) -> None:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, frames, extension=".gif", duration=int(1000 / fps), loop=0)
    atomic_write_bytes(path, buf.getvalue())


def turntable_of_run(run_dir, path: Path | None = None, **kwargs) -> Path:
    """Render RUN's refined mesh (or its coarse mesh) turning, saved as RUN/turntable.gif."""
    from .asset import load_asset

    asset = load_asset(run_dir)
    if asset.uvs is None:  # coarse mesh: a 1-texel-per-vertex stand-in is not worth it; use vertex colours as texture
        uvs = np.zeros((len(asset.vertices), 2), np.float32)
        texture = np.full((1, 1, 3), asset.colours.mean(0) / 255.0, np.float32)
    else:
        uvs = asset.uvs
        texture = asset.texture[::-1].astype(np.float32) / 255.0  # PNG rows -> texel rows (v up)
    frames = render_turntable(asset.vertices, asset.faces, uvs, texture, **kwargs)
    target = path or run_dir.turntable
    save_gif(frames, target)
    return target
