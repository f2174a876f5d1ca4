"""UV unwrapping with xatlas."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class UVMesh:
    """A mesh cut along UV seams. vmapping [Vs] maps each split vertex to its welded vertex, so
    geometry stays welded: positions of the split mesh are welded_positions[vmapping].
    faces [F, 3] index split vertices; uvs [Vs, 2] in [0, 1] (v up, OBJ convention)."""

    vmapping: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray


def unwrap(vertices: np.ndarray, faces: np.ndarray, resolution: int = 512, padding: int = 2) -> UVMesh:
    """Charts and packing by xatlas; ``resolution`` and ``padding`` (texels) set the atlas spacing."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, new_faces, uvs = atlas[0]
    return UVMesh(vmapping=vmapping.astype(np.int64), faces=new_faces.astype(np.int64), uvs=uvs.astype(np.float32))
