"""The asset: a textured (or vertex-coloured) triangle mesh, its normals, and its trimesh form.

Loading it from a RUN is :mod:`meshdream.asset.loading`; writing it as files, :mod:`meshdream.asset.formats`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from ..mesh.geometry import smooth_normals


GENERATOR = "meshdream"


@dataclass
class Asset:
    """vertices [V, 3], faces [F, 3]; either uvs [V, 2] (v up) + texture [T, T, 3] uint8 (PNG orientation,
    row 0 = v 1) or colours [V, 3] uint8. normals [V, 3] (unit; default: smooth normals of the welded
    surface, so UV seams do not show). normal_map [N, N, 3] uint8: an optional tangent-space normal map
    (PNG orientation, same UVs). extras: JSON-able facts about how the asset was made (prompt, seed, settings)."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None
    colours: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None
    normal_map: Optional[np.ndarray] = None
    name: str = "meshdream"
    extras: Dict[str, Any] = field(default_factory=dict)


def normals_of(asset: Asset) -> np.ndarray:
    """The asset's normals [V, 3] float32: its own, or the smooth normals of its welded surface."""
    return asset.normals if asset.normals is not None else smooth_normals(asset.vertices, asset.faces).astype(np.float32)


# |coordinate| a mesh of a RUN may have (scene units; the scene is a cube of a few units): far beyond it, float32
# geometry code (squared distances, UV packing, rasterising) overflows instead of failing cleanly
MAX_COORDINATE = 1e4
TEXTURE_SIZES = (16, 8192)  # the refine stage's texture_size limits


def check_mesh(vertices, faces, per_vertex=None) -> None:
    """A mesh a stage wrote: at least one face, finite vertices within MAX_COORDINATE, face indices in range, a
    surface with some area, one finite uv / colour per vertex. Raises ValueError saying what is wrong."""
    v, f = np.asarray(vertices), np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"no triangles (vertices {v.shape}, faces {f.shape})")
    if not np.isfinite(v).all() or f.min() < 0 or f.max() >= len(v):
        raise ValueError("non-finite vertices or face indices out of range")
    if np.abs(v).max() > MAX_COORDINATE:
        raise ValueError(f"a vertex coordinate is {float(np.abs(v).max()):.3g}, beyond the {MAX_COORDINATE:g} a scene spans")
    tri = v[f].astype(np.float64)
    if not (np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) > 0).any():
        raise ValueError(f"none of its {len(f)} faces has any area")
    if per_vertex is not None:
        pv = np.asarray(per_vertex)
        if len(pv) != len(v):
            raise ValueError(f"{len(pv)} uvs / colours for {len(v)} vertices")
        if pv.dtype.kind == "f" and not np.isfinite(pv).all():
            raise ValueError("non-finite uvs")


def check_texture(texture: np.ndarray) -> None:
    """A texture the refine stage wrote: square, TEXTURE_SIZES[0] to TEXTURE_SIZES[1] pixels a side."""
    h, w = texture.shape[:2]
    lo, hi = TEXTURE_SIZES
    if h != w or not lo <= h <= hi:
        raise ValueError(f"the texture is {w}x{h} pixels; the refine stage writes square textures of {lo} to {hi} pixels")


def resize_texture(texture: np.ndarray, size: int) -> np.ndarray:
    """texture [T, T, C] uint8 resampled (Lanczos) to [size, size, C]."""
    from PIL import Image

    return np.asarray(Image.fromarray(texture).resize((size, size), Image.LANCZOS))


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def to_trimesh(asset: Asset):
    """A trimesh.Trimesh with a PBR material (textured) or vertex colours, and the asset's normals."""
    import trimesh
    from PIL import Image

    if asset.uvs is not None:
        material = trimesh.visual.material.PBRMaterial(
            name=f"{asset.name}_material", baseColorTexture=Image.fromarray(asset.texture), baseColorFactor=[255, 255, 255, 255],
            metallicFactor=0.0, roughnessFactor=0.9, doubleSided=False,
            normalTexture=Image.fromarray(asset.normal_map) if asset.normal_map is not None else None)
        visual = trimesh.visual.TextureVisuals(uv=asset.uvs, material=material)
    else:
        visual = trimesh.visual.ColorVisuals(vertex_colors=asset.colours)
    normals = normals_of(asset)
    mesh = trimesh.Trimesh(asset.vertices, asset.faces, visual=visual, vertex_normals=normals, process=False)
    if asset.normal_map is not None:  # the tangent frame the map was baked in, exported as TANGENT (see _gltf_tree_fixer)
        from ..texture.normal_map import vertex_tangents

        mesh.vertex_attributes["_TANGENT"] = vertex_tangents(asset.vertices, asset.faces, asset.uvs, normals)
    return mesh
