"""Export stage: a RUN's asset, optionally decimated and with its texture resampled, written in any format of
the asset writers' table (meshdream.asset.formats.WRITERS: GLB / glTF / OBJ + MTL + PNG / PLY, and for 3D printing STL / 3MF)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..asset.formats import FORMATS, write_asset
from ..asset.loading import load_asset
from ..asset.model import Asset, resize_texture
from ..errors import MeshdreamError, UserInputError
from ..engine.output_file import output_file
from ..engine.provenance import check_stages
from ..engine.run import RunDir, locks_run
from ..texture.sampling import sample_texture


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
        return Asset(v, f, colours=None if c is None else (np.clip(c, 0, 1) * 255).round().astype(np.uint8),
                     name=asset.name, extras=asset.extras)
    return retexture(asset, v, f)


def retexture(asset: Asset, vertices: np.ndarray, faces: np.ndarray) -> Asset:
    """Unwrap (vertices, faces) and fill a texture of the original size by sampling the original
    textured surface at the closest point of every texel."""
    import torch
    import trimesh

    from .. import raster as dr
    from ..texture.bake import dilate, uv_positions
    from ..mesh.uv import unwrap

    size = asset.texture.shape[0]
    uv = unwrap(vertices, faces, resolution=size)
    split = torch.from_numpy(vertices[uv.vmapping]).float()
    pos, mask = uv_positions(dr.get_context("cpu"), split, torch.from_numpy(uv.faces), torch.from_numpy(uv.uvs), size)
    if not bool(mask.any()):  # no texel of the new unwrap is covered: nothing to sample
        raise MeshdreamError(f"decimating to {len(faces)} faces left no surface to texture; try a larger --faces")
    old = trimesh.Trimesh(asset.vertices, asset.faces, process=False)
    pts = pos[mask].numpy().astype(np.float64)
    closest, _, tri = trimesh.proximity.closest_point(old, pts)
    bary = trimesh.triangles.points_to_barycentric(old.triangles[tri], closest)
    old_uv = (asset.uvs[asset.faces[tri]] * bary[:, :, None]).sum(1)
    tex = torch.zeros(size, size, 3, dtype=torch.float64)
    tex[mask] = torch.from_numpy(sample_texture(asset.texture, old_uv).astype(np.float64) / 255.0)
    tex = dilate(tex, mask).numpy()[::-1]  # texel rows (v up) -> PNG rows (row 0 = v 1)
    texture = (np.clip(tex, 0, 1) * 255).round().astype(np.uint8)
    return Asset(vertices[uv.vmapping].astype(np.float32), uv.faces, uvs=uv.uvs, texture=np.ascontiguousarray(texture),
                 name=asset.name, extras=asset.extras)


@locks_run("export", lambda run, **_: RunDir.existing(run), read_only_ok=True)
def export(run: str | os.PathLike, *, format: str | None = None, output: str | os.PathLike | None = None,
           faces: int | None = None, texture_size: int | None = None, normal_map: bool = False,
           size_mm: float | None = None) -> Path:
    """Write RUN's asset in ``format``; returns the main file's path (default RUN/export/model.FORMAT).

    ``format`` (default: ``output``'s extension, else glb) must agree with ``output``'s extension, and ``output``
    may not point into the RUN's stage folders (:mod:`meshdream.engine.output_file`).

    ``faces`` decimates the mesh (and re-bakes its texture); with ``normal_map`` the refined mesh's normals are
    baked into a tangent-space normal map of the decimated one (GLB / glTF ``normalTexture``), so the detail
    the faces lose still shades. ``size_mm`` (stl / 3mf only, default 50): the printed solid's longest side."""
    from ..asset.printing import PRINT_FORMATS, check_size_mm

    if format is not None and format not in FORMATS:
        raise UserInputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if normal_map and faces is None:
        raise UserInputError("--normal-map needs --faces N: the map carries the full mesh's detail onto a decimated one")
    if faces is not None and faces < 4:
        raise UserInputError(f"--faces {faces} is too small; a closed mesh needs at least 4 faces")
    if texture_size is not None and not 16 <= texture_size <= 8192:
        raise UserInputError(f"--texture-size {texture_size} is out of range; use 16 to 8192")
    run_dir = RunDir.existing(run)
    if normal_map and (format or (Path(output).suffix[1:].lower() if output is not None else "glb")) not in ("glb", "gltf"):
        raise UserInputError(f"--normal-map is written into GLB / glTF materials; {format or str(output)!r} has no place for it")
    check_stages(run_dir, "asset")  # nothing is made for a RUN that is refused
    path, format = output_file(output, format, FORMATS, run_dir.export_file)
    if size_mm is not None and format not in PRINT_FORMATS:
        raise UserInputError(f"--size-mm sizes a 3D-print file; use it with --format {' or '.join(PRINT_FORMATS)}, not {format!r}")
    options = {"size_mm": check_size_mm(size_mm)} if format in PRINT_FORMATS else {}
    asset = load_asset(run_dir)
    if normal_map and asset.uvs is None:
        raise UserInputError(f"--normal-map needs a refined (textured) mesh; run `meshdream refine {run_dir.root}` first")
    full = asset
    if faces is not None:
        asset = decimate(asset, faces)
    if normal_map and asset is not full:
        from ..asset.model import normals_of
        from ..texture.normal_map import bake_normal_map

        asset.normals = normals_of(asset)
        asset.normal_map = bake_normal_map(full.vertices, full.faces, normals_of(full), asset.vertices, asset.faces, asset.uvs,
                                           asset.normals, texture_size or asset.texture.shape[0])
    if texture_size is not None and asset.texture is not None:
        asset.texture = resize_texture(asset.texture, texture_size)
    write_asset(asset, path, format, **options)
    return path
