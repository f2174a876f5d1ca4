"""Marching cubes (our C++ kernel) with input checking; numpy or torch in, numpy out."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import _C


def marching_cubes(volume, level: float, bounds: Sequence[Sequence[float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Extract the iso-surface ``volume == level`` of a field that is LARGER INSIDE.

    volume: [X, Y, Z] numpy array or torch tensor (CPU or CUDA; moved to the CPU), sample [i, j, k] at
    (x_i, y_j, z_k). bounds: ((xmin, ymin, zmin), (xmax, ymax, zmax)) for the grid's first and last
    samples (default: index space), finite with min < max per axis. Returns vertices [V, 3] float32 (one per crossed grid edge) and
    faces [F, 3] int64, counter-clockwise seen from outside; empty arrays when nothing crosses.
    """
    if hasattr(volume, "detach"):  # torch tensor
        volume = volume.detach().to("cpu").float().numpy()
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-dimensional [X, Y, Z], got shape {volume.shape}")
    if min(volume.shape) < 2:
        raise ValueError(f"volume must have at least 2 samples per axis, got shape {volume.shape}")
    if not np.issubdtype(volume.dtype, np.number) or np.issubdtype(volume.dtype, np.complexfloating):
        raise ValueError(f"volume must hold real numbers, got dtype {volume.dtype}")
    level = float(level)
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level}")
    if bounds is None:
        lo, hi = (0.0, 0.0, 0.0), tuple(float(n - 1) for n in volume.shape)
    else:
        lo, hi = (tuple(float(x) for x in b) for b in bounds)
        if len(lo) != 3 or len(hi) != 3:
            raise ValueError(f"bounds must be ((xmin, ymin, zmin), (xmax, ymax, zmax)), got {bounds!r}")
        # NaN / infinite bounds would make NaN vertices; inverted ones turn every face inward
        if not all(np.isfinite(a) and np.isfinite(b) and a < b for a, b in zip(lo, hi)):
            raise ValueError(f"bounds must be finite with min < max on every axis, got {bounds!r}")
    try:
        v, f = _C.marching_cubes(np.ascontiguousarray(volume, dtype=np.float32), level, lo, hi)
    except ValueError as e:
        raise ValueError(f"{e} (volume shape {volume.shape})") from None
    return v, f
