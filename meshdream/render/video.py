"""Encoding turntable frames as files: an H.264 MP4, a GIF or one PNG sheet. One table, ``ENCODERS =
{format: encoder}``: the ``render`` command's --format choices and its default views per format come from here
(torch-free, so the CLI can list them without loading torch)."""
from __future__ import annotations

import io
import itertools
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable

import numpy as np

from ..errors import UserInputError

DEFAULT_VIEWS = {"mp4": 100, "gif": 24, "png": 8}
MP4_FPS = 20  # 100 frames: a 5 s turn
X264_PRESET = "veryfast"


def gif_bytes(frames: np.ndarray, fps: int = 12) -> bytes:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, frames, extension=".gif", duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def mp4_bytes(frames: Iterable[np.ndarray], fps: int = MP4_FPS) -> bytes:
    """H.264 (yuv420p, plays everywhere) through the ffmpeg binary imageio-ffmpeg ships. frames: [N, H, W, 3]
    uint8 or any iterable of [H, W, 3] uint8 frames (streamed to ffmpeg), H and W even."""
    import imageio_ffmpeg

    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "turntable.mp4")
        # quality 8 = CRF 10 (visually lossless); x264's "veryfast" preset encodes it in ~40% of the default
        # "medium"'s CPU time at the same size and PSNR (44.3 vs 44.6 dB against the frames, measured on a
        # 100-frame 512 px turntable)
        writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=8,
                                             macro_block_size=2, ffmpeg_log_level="error",
                                             output_params=["-preset", X264_PRESET, "-movflags", "+faststart"])
        writer.send(None)
        for frame in itertools.chain([first], frames):
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return Path(path).read_bytes()


def png_sheet(frames: np.ndarray) -> bytes:
    """All frames [N, H, W', 3] stacked top to bottom in one PNG."""
    from ..asset.model import png_bytes

    return png_bytes(np.concatenate(list(frames), axis=0))


ENCODERS: Dict[str, Callable[..., bytes]] = {"mp4": mp4_bytes, "gif": gif_bytes, "png": png_sheet}
RENDER_FORMATS = tuple(ENCODERS)


def encode(frames, format: str) -> bytes:
    """frames: [N, H, W, 3] uint8 (an iterable of frames for mp4)."""
    if format not in ENCODERS:
        raise UserInputError(f"unknown render format {format!r}; choose one of {', '.join(RENDER_FORMATS)}")
    return ENCODERS[format](frames)
