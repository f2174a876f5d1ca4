"""Sampling a texture image at UV coordinates (numpy, for files: export, normal-map checks)."""
from __future__ import annotations

import numpy as np


def sample_texture(texture: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """Bilinear colours [V, 3] uint8 of a PNG-oriented texture at uvs [V, 2] (v up)."""
    T_h, T_w = texture.shape[:2]
    x = np.clip(uvs[:, 0] * T_w - 0.5, 0, T_w - 1)
    y = np.clip((1 - uvs[:, 1]) * T_h - 0.5, 0, T_h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, T_w - 1), np.minimum(y0 + 1, T_h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    t = texture.astype(np.float64)
    c = (1 - fx) * (1 - fy) * t[y0, x0] + fx * (1 - fy) * t[y0, x1] + (1 - fx) * fy * t[y1, x0] + fx * fy * t[y1, x1]
    return np.clip(c.round(), 0, 255).astype(np.uint8)
