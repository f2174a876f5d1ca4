"""Turntables of a RUN's asset: a GIF and an H.264 MP4 (lit view beside a normals view), and a PNG sheet.

The lit view shades the texture with a key light above and to the left of the camera (so the shape
reads, unlike a light at the eye) plus ambient; the normals view shows world-space normals as colours
(x, y, z -> r, g, b), which shows the geometry whatever the texture.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .. import raster as dr
from ..asset.loading import load_asset
from ..asset.model import Asset, normals_of
from ..render.cameras import Cameras, turntable_cameras
from ..render.mesh_render import rasterize_mesh, shade_fragments
from ..atomic_files import atomic_write_bytes
from ..errors import UserInputError
from ..engine.run import RunDir
from ..render.video import DEFAULT_VIEWS, RENDER_FORMATS, encode, gif_bytes, mp4_bytes



def _texture_of(asset: Asset) -> tuple[np.ndarray, np.ndarray]:
    """uvs [V, 2] and texture [T, T, 3] float in texel-row order (v up) for the rasteriser."""
    if asset.uvs is None:  # coarse mesh: its mean vertex colour as a 1-texel texture
        return np.zeros((len(asset.vertices), 2), np.float32), np.full((1, 1, 3), asset.colours.mean(0) / 255.0, np.float32)
    return asset.uvs, asset.texture[::-1].astype(np.float32) / 255.0  # PNG rows -> texel rows (v up)


def _key_lights(cams: Cameras) -> torch.Tensor:
    """[B, 3] a light up and to the left of each camera, twice as far from the object."""
    c2w = cams.c2w
    right, up, back = c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2]
    direction = back + 0.8 * up - 0.6 * right
    return direction / direction.norm(dim=-1, keepdim=True) * cams.distance[:, None] * 2


@torch.no_grad()
def iter_views(asset: Asset, cams: Cameras, size: int, batch: int = 2, ambient: float = 0.35,
               diffuse: float = 0.75) -> Iterator[np.ndarray]:
    """Lit and normals views of ``asset``, ``batch`` views at a time: [b, size, size, 6] uint8 (lit RGB,
    normals RGB; row 0 = top), on white, lit by :func:`_key_lights`. One rasterisation per view serves both.
    Small batches keep memory flat: a 512 px view's float buffers take ~60 MB."""
    ctx = dr.get_context("cpu")
    uvs, texture = _texture_of(asset)
    v = torch.from_numpy(np.ascontiguousarray(asset.vertices, np.float32))
    faces = torch.from_numpy(np.ascontiguousarray(asset.faces))
    normals = torch.from_numpy(normals_of(asset))
    uv = torch.from_numpy(np.ascontiguousarray(uvs, np.float32))
    tex = torch.from_numpy(np.ascontiguousarray(texture, np.float32))
    lights = _key_lights(cams)
    for i in range(0, len(cams), batch):
        fragments = rasterize_mesh(ctx, v, faces, cams[i:i + batch], size, uvs=uv, texture=tex, surface=True,
                                   normals=normals, covered_only=True)
        both, _ = shade_fragments(fragments, "lambertian", lights[i:i + batch], ambient, diffuse, normals_image=True)
        yield both.clamp_(0, 1).mul_(255).round_().to(torch.uint8).numpy()


def iter_turntable_frames(asset: Asset, views: int, size: int, elevation: float = 15.0,
                          distance: float = 2.5) -> Iterator[np.ndarray]:
    """Frames [size, 2 * size, 3] uint8 of the asset turning once (lit view | normals view), one at a
    time: a 100-frame 512 px video is encoded without holding its 157 MB of frames (nor, before, the
    2.5 GB of float copies measured when they were converted all at once)."""
    for both in iter_views(asset, turntable_cameras(views, elevation_deg=elevation, distance=distance), size):
        yield from np.concatenate([both[..., :3], both[..., 3:]], axis=2)


def turntable_frames(asset: Asset, views: int, size: int, elevation: float = 15.0, distance: float = 2.5) -> np.ndarray:
    """Frames [N, size, 2 * size, 3] uint8 of the asset turning once: lit view | normals view."""
    return np.stack(list(iter_turntable_frames(asset, views, size, elevation, distance)))


def render_run(run: str | os.PathLike, *, views: int | None = None, size: int = 512, format: str | None = None,
               output: str | os.PathLike | None = None) -> Path:
    """Render RUN's asset (refined, else coarse) turning: lit | normals. Returns the file (default RUN/render.FORMAT).

    ``format`` (default: ``output``'s extension, else mp4) must agree with ``output``'s extension. The stages are
    checked as ``export`` checks them (:func:`meshdream.engine.provenance.check_stages`): nothing stale is rendered."""
    from ..engine.output_file import output_file
    from ..engine.provenance import check_stages

    if format is not None and format not in RENDER_FORMATS:
        raise UserInputError(f"unknown render format {format!r}; choose one of {', '.join(RENDER_FORMATS)}")
    if views is not None and views < 1:
        raise UserInputError(f"--views {views}: give at least 1 view")
    if not 16 <= size <= 4096:
        raise UserInputError(f"--size {size} is out of range; use 16 to 4096")
    run_dir = RunDir.existing(run)
    check_stages(run_dir, "asset")
    path, format = output_file(output, format, RENDER_FORMATS, lambda fmt: run_dir.root / f"render.{fmt}")
    asset = load_asset(run_dir)
    size += size % 2  # H.264 wants even sizes
    views = views or DEFAULT_VIEWS[format]
    frames = iter_turntable_frames(asset, views, size) if format == "mp4" else turntable_frames(asset, views, size)
    atomic_write_bytes(path, encode(frames, format))
    return path


GIF_VIEWS, GIF_SIZE = 24, 160  # a small preview
VIDEO_SIZE = 512


def turntable_of_run(run_dir: RunDir, *, video: bool = True) -> list[Path]:
    """RUN/turntable.gif (GIF_SIZE px, GIF_VIEWS frames) and RUN/turntable.mp4 (VIDEO_SIZE px, 5 s at 20 fps),
    both lit | normals."""
    asset = load_asset(run_dir)
    gif_frames = turntable_frames(asset, GIF_VIEWS, GIF_SIZE)
    if not video:
        atomic_write_bytes(run_dir.turntable, gif_bytes(gif_frames))
        return [run_dir.turntable]
    from concurrent.futures import ThreadPoolExecutor

    # the GIF's encoding (Pillow, one core, ~1 s, GIL released most of the time) runs on a worker thread while
    # the MP4's frames render and ffmpeg encodes them: on 2 cores they overlap. Both files are byte for byte
    # what encoding one after the other gave, and the GIF is written even when the MP4 fails, as before.
    mp4 = run_dir.root / "turntable.mp4"
    with ThreadPoolExecutor(1, thread_name_prefix="gif") as pool:
        gif = pool.submit(gif_bytes, gif_frames)
        try:
            video_bytes = mp4_bytes(iter_turntable_frames(asset, DEFAULT_VIEWS["mp4"], VIDEO_SIZE))
        finally:
            atomic_write_bytes(run_dir.turntable, gif.result())
    atomic_write_bytes(mp4, video_bytes)
    return [run_dir.turntable, mp4]
