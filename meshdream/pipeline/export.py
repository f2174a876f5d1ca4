"""Export a RUN's textured mesh: GLB / glTF (PBR metallic-roughness, embedded PNG base colour, normals,
UVs, +Y up), OBJ + MTL + PNG, or PLY with vertex colours. Written through trimesh."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..checkpoint import atomic_write_bytes
from ..errors import UserInputError
from ..run import RunDir

FORMATS = ("glb", "gltf", "obj", "ply")


@dataclass
class Asset:
    """vertices [V, 3], faces [F, 3]; either uvs [V, 2] (v up) + texture [T, T, 3] uint8 (PNG orientation,
    row 0 = v 1) or colours [V, 3] uint8."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None
    colours: Optional[np.ndarray] = None


def load_asset(run: RunDir) -> Asset:
    """The refined textured mesh, or (with a warning) the coarse mesh with vertex colours."""
    import trimesh
    from PIL import Image

    if run.refined_mesh.is_file() and run.refined_texture.is_file():
        mesh = trimesh.load(run.refined_mesh, process=False, force="mesh")
        uvs = np.asarray(mesh.visual.uv, dtype=np.float32)
        texture = np.asarray(Image.open(run.refined_texture).convert("RGB"))
        return Asset(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64), uvs=uvs, texture=texture)
    if run.coarse_mesh.is_file():
        warnings.warn(f"RUN {str(run.root)!r} has no refine result; exporting the coarse mesh with vertex colours "
                      "(run `meshdream refine RUN` for a textured asset)", stacklevel=3)
        mesh = trimesh.load(run.coarse_mesh, process=False, force="mesh")
        colours = np.asarray(mesh.visual.vertex_colors, dtype=np.uint8)[:, :3]
        return Asset(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64), colours=colours)
    raise UserInputError(f"RUN {str(run.root)!r} has neither a refined nor a coarse mesh; run `meshdream generate PROMPT --out {run.root}`")


def decimate(asset: Asset, faces: int) -> Asset:
    """Quadric edge collapse of the welded geometry to about ``faces`` faces. A textured asset is then
    unwrapped again and its texture resampled from the original surface (closest point), so the
    face target holds however many UV seams the original had."""
    import trimesh

    from ..mesh import clean_mesh

    if len(asset.faces) <= faces:
        return asset
    colours = asset.colours.astype(np.float64) / 255.0 if asset.colours is not None else None
    welded = trimesh.Trimesh(asset.vertices, asset.faces, process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    v, f, c = clean_mesh(welded.vertices, welded.faces, None if asset.uvs is not None else colours,
                         min_component_fraction=0, target_faces=faces)
    if asset.uvs is None:
        return Asset(v, f, colours=None if c is None else (np.clip(c, 0, 1) * 255).round().astype(np.uint8))
    return retexture(asset, v, f)


def retexture(asset: Asset, vertices: np.ndarray, faces: np.ndarray) -> Asset:
    """Unwrap (vertices, faces) and fill a texture of the original size by sampling the original
    textured surface at the closest point of every texel."""
    import torch
    import trimesh

    from .. import raster as dr
    from ..bake import dilate, uv_positions
    from ..uv import unwrap

    size = asset.texture.shape[0]
    uv = unwrap(vertices, faces, resolution=size)
    split = torch.from_numpy(vertices[uv.vmapping]).float()
    pos, mask = uv_positions(dr.get_context("cpu"), split, torch.from_numpy(uv.faces), torch.from_numpy(uv.uvs), size)
    old = trimesh.Trimesh(asset.vertices, asset.faces, process=False)
    pts = pos[mask].numpy().astype(np.float64)
    closest, _, tri = trimesh.proximity.closest_point(old, pts)
    bary = trimesh.triangles.points_to_barycentric(old.triangles[tri], closest)
    old_uv = (asset.uvs[asset.faces[tri]] * bary[:, :, None]).sum(1)
    tex = torch.zeros(size, size, 3, dtype=torch.float64)
    tex[mask] = torch.from_numpy(sample_texture(asset.texture, old_uv).astype(np.float64) / 255.0)
    tex = dilate(tex, mask).numpy()[::-1]  # texel rows (v up) -> PNG rows (row 0 = v 1)
    texture = (np.clip(tex, 0, 1) * 255).round().astype(np.uint8)
    return Asset(vertices[uv.vmapping].astype(np.float32), uv.faces, uvs=uv.uvs, texture=np.ascontiguousarray(texture))


def _resize(texture: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(texture).resize((size, size), Image.LANCZOS))


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


def to_trimesh(asset: Asset):
    import trimesh
    from PIL import Image

    if asset.uvs is not None:
        material = trimesh.visual.material.PBRMaterial(name="meshdream", baseColorTexture=Image.fromarray(asset.texture),
                                                       baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0,
                                                       roughnessFactor=0.9, doubleSided=False)
        visual = trimesh.visual.TextureVisuals(uv=asset.uvs, material=material)
    else:
        visual = trimesh.visual.ColorVisuals(vertex_colors=asset.colours)
    mesh = trimesh.Trimesh(asset.vertices, asset.faces, visual=visual, process=False)
    _ = mesh.vertex_normals  # computed now, exported with the mesh
    return mesh


def export(run: str | os.PathLike, *, format: str = "glb", output: str | os.PathLike | None = None, faces: int | None = None,
           texture_size: int | None = None) -> Path:
    """Write RUN's asset in ``format``; returns the main file's path (default RUN/export/model.FORMAT)."""
    if format not in FORMATS:
        raise UserInputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if faces is not None and faces < 4:
        raise UserInputError(f"--faces {faces} is too small; a closed mesh needs at least 4 faces")
    if texture_size is not None and not 16 <= texture_size <= 8192:
        raise UserInputError(f"--texture-size {texture_size} is out of range; use 16 to 8192")
    run_dir = RunDir.existing(run)
    path = Path(output) if output is not None else run_dir.export / f"model.{format}"
    if path.exists() and path.is_dir():
        raise UserInputError(f"--output {str(path)!r} is a folder; give a file name such as model.{format}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"cannot create the output folder {str(path.parent)!r}: {e.strerror or e}") from None
    asset = load_asset(run_dir)
    if faces is not None:
        asset = decimate(asset, faces)
    if texture_size is not None and asset.texture is not None:
        asset.texture = _resize(asset.texture, texture_size)
    write_asset(asset, path, format)
    return path


def write_asset(asset: Asset, path: Path, format: str) -> None:
    from trimesh.exchange.gltf import export_glb, export_gltf

    if format == "ply":
        colours = asset.colours if asset.uvs is None else sample_texture(asset.texture, asset.uvs)
        import trimesh

        mesh = trimesh.Trimesh(asset.vertices, asset.faces, vertex_colors=colours, process=False)
        atomic_write_bytes(path, mesh.export(file_type="ply"))
        return
    mesh = to_trimesh(asset)
    if format == "glb":
        atomic_write_bytes(path, export_glb(mesh.scene(), include_normals=True))
    elif format == "gltf":
        files = export_gltf(mesh.scene(), include_normals=True, embed_buffers=True)
        atomic_write_bytes(path, files["model.gltf"])
    else:  # obj + mtl + png beside it
        from trimesh.exchange.obj import export_obj

        stem = path.stem
        text, files = export_obj(mesh, include_normals=True, include_texture=True, return_texture=True, mtl_name=f"{stem}.mtl")
        pngs = [n for n in files if not n.endswith(".mtl")]
        for name, data in files.items():
            if name.endswith(".mtl"):
                mtl = data.decode() if isinstance(data, bytes) else data
                for png in pngs:
                    mtl = mtl.replace(png, f"{stem}.png")
                atomic_write_bytes(path.parent / name, mtl.encode())
            else:
                atomic_write_bytes(path.parent / f"{stem}.png", data)
        atomic_write_bytes(path, text.encode())
