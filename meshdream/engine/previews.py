"""Preview images: turntable strips a stage writes to RUN/<stage>/previews/ as it goes."""
from __future__ import annotations

import os

import numpy as np
import torch


def save_strip(images: torch.Tensor, path: str | os.PathLike) -> None:
    """Save images [N, 3, H, W] in [0, 1] side by side as one PNG (written atomically)."""
    from io import BytesIO

    from PIL import Image

    from ..atomic_files import atomic_write_bytes

    strip = torch.cat(list(images.detach().float().clamp(0, 1).cpu()), dim=-1)  # [3, H, N*W]
    arr = (strip.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
