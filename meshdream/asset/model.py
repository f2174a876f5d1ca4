"""Assets: a textured (or vertex-coloured) triangle mesh, loaded from a RUN and written as files.

Writers are one table, ``WRITERS = {format: writer}``; a writer turns an :class:`Asset` into the files of
that format, ``{file name: bytes}``, without touching the disk (``write_asset`` writes them atomically).
The CLI's ``--format`` choices, the export stage and the refine stage's OBJ all go through this table.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..errors import UserInputError
from ..engine.run import RunDir, no_result, read_prompt, read_yaml, reading, rerun

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


def smooth_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals [V, 3] of the surface with coincident vertices welded, so a vertex
    split along a UV seam gets the same normal on both sides."""
    v = np.asarray(vertices, np.float64)
    _, weld = np.unique(np.round(v, 6), axis=0, return_inverse=True)
    weld = weld.reshape(-1)
    tri = v[faces]
    n_face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    acc = np.zeros((weld.max() + 1, 3))
    for k in range(3):
        np.add.at(acc, weld[faces[:, k]], n_face)
    n = acc[weld]
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 1e-12, n / np.maximum(length, 1e-12), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)


def normals_of(asset: Asset) -> np.ndarray:
    return asset.normals if asset.normals is not None else smooth_normals(asset.vertices, asset.faces)


def run_extras(run: RunDir) -> dict:
    """prompt, negative prompt, seed and the stages' settings of RUN, as far as they exist."""
    extras: dict = {}
    try:
        info = read_prompt(run)
    except UserInputError:  # no coarse result (CorruptRunFileError stops the export)
        info = {}
    for key in ("prompt", "negative_prompt", "seed"):
        if info.get(key) not in (None, ""):
            extras[key] = info[key]
    settings = {}
    for stage in ("coarse", "refine"):
        path = run.config_file(stage)
        if path.is_file():
            settings[stage] = read_yaml(path, rerun(run, stage))
    if settings:
        extras["settings"] = settings
    return extras


def load_asset(run: RunDir) -> Asset:
    """The refined textured mesh, or (with a warning) the coarse mesh with vertex colours."""
    import trimesh
    from PIL import Image

    if run.refined_mesh.is_file() and run.refined_texture.is_file():
        remedy = rerun(run, "refine")
        # the texture first: the OBJ loader reads it too (through the MTL), and its error would name the OBJ
        with reading(run.refined_texture, remedy):
            texture = np.asarray(Image.open(run.refined_texture).convert("RGB"))
            check_texture(texture)
        with reading(run.refined_mesh, remedy):
            mesh = trimesh.load(run.refined_mesh, process=False, force="mesh")
            uvs = np.asarray(mesh.visual.uv, dtype=np.float32)
            check_mesh(mesh.vertices, mesh.faces, uvs)
        return Asset(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64), uvs=uvs, texture=texture,
                     extras=run_extras(run))
    if run.coarse_mesh.is_file():
        warnings.warn(f"RUN {str(run.root)!r} has no refine result; exporting the coarse mesh with vertex colours "
                      "(run `meshdream refine RUN` for a textured asset)", stacklevel=3)
        with reading(run.coarse_mesh, rerun(run, "coarse")):
            mesh = trimesh.load(run.coarse_mesh, process=False, force="mesh")
            colours = np.asarray(mesh.visual.vertex_colors, dtype=np.uint8)[:, :3]
            check_mesh(mesh.vertices, mesh.faces, colours)
        return Asset(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64), colours=colours,
                     extras=run_extras(run))
    raise no_result(run, "neither a refined nor a coarse mesh")


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


# glTF bufferView targets (glTF 2.0 spec 3.6.2.1): vertex attributes vs. indices
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def _gltf_tree_fixer(asset: Asset) -> Callable[[dict], None]:
    """Name the node / mesh / material, say who made the file and how, and set bufferView targets."""
    from .. import __version__

    def fix(tree: dict) -> None:
        tree["asset"]["generator"] = f"{GENERATOR} {__version__}"
        if asset.extras:
            tree["asset"]["extras"] = asset.extras
        for node in tree.get("nodes", []):
            if "mesh" in node:
                node["name"] = asset.name
        for mesh in tree.get("meshes", []):
            mesh["name"] = asset.name
            for prim in mesh["primitives"]:
                if "_TANGENT" in prim.get("attributes", {}):  # trimesh writes custom attributes with a leading "_"
                    prim["attributes"]["TANGENT"] = prim["attributes"].pop("_TANGENT")
                for accessor in prim.get("attributes", {}).values():
                    tree["bufferViews"][tree["accessors"][accessor]["bufferView"]]["target"] = ARRAY_BUFFER
                if "indices" in prim:
                    tree["bufferViews"][tree["accessors"][prim["indices"]]["bufferView"]]["target"] = ELEMENT_ARRAY_BUFFER
        for material in tree.get("materials", []):
            material["name"] = f"{asset.name}_material"

    return fix


def _scene(asset: Asset):
    import trimesh

    scene = trimesh.Scene()
    scene.add_geometry(to_trimesh(asset), geom_name=asset.name, node_name=asset.name)
    return scene


def glb_files(asset: Asset, stem: str) -> dict[str, bytes]:
    """Binary glTF 2.0: PBR metallic-roughness material with embedded PNG(s), normals, UVs, +Y up."""
    from trimesh.exchange.gltf import export_glb

    return {f"{stem}.glb": export_glb(_scene(asset), include_normals=True, tree_postprocessor=_gltf_tree_fixer(asset))}


def gltf_files(asset: Asset, stem: str) -> dict[str, bytes]:
    """glTF 2.0 JSON with its buffer embedded as a data URI (one self-contained file): the GLB's own
    JSON and binary chunks, so both formats carry the same document."""
    import base64
    import json
    import struct

    glb = glb_files(asset, stem)[f"{stem}.glb"]
    json_len = struct.unpack_from("<I", glb, 12)[0]
    tree = json.loads(glb[20:20 + json_len])
    if "buffers" in tree:
        bin_len = struct.unpack_from("<I", glb, 20 + json_len)[0]
        data = glb[28 + json_len:28 + json_len + bin_len][:tree["buffers"][0]["byteLength"]]
        tree["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    return {f"{stem}.gltf": json.dumps(tree, separators=(",", ":")).encode()}


def obj_files(asset: Asset, stem: str, texture_file: str | None = None) -> dict[str, bytes]:
    """OBJ with vertex normals (vn) and UVs + MTL + PNG texture (named ``texture_file``, default STEM.png);
    a vertex-coloured asset writes colours after the positions (the common `v x y z r g b` extension)."""
    from trimesh.exchange.obj import export_obj

    from .. import __version__

    header = f"{GENERATOR} {__version__}"
    mesh = to_trimesh(asset)
    if asset.uvs is None:
        text = export_obj(mesh, include_normals=True, include_color=True, include_texture=False, header=header)
        return {f"{stem}.obj": text.encode()}
    texture_file = texture_file or f"{stem}.png"
    mtl = (f"# {header}\nnewmtl {asset.name}_material\nKa 1.0 1.0 1.0\nKd 1.0 1.0 1.0\nKs 0.0 0.0 0.0\nNs 1.0\nd 1.0\nillum 1\n"
           f"map_Kd {texture_file}\n")
    text = export_obj(mesh, include_normals=True, include_texture=True, write_texture=False, return_texture=False,
                      mtl_name=f"{stem}.mtl", header=header)
    # trimesh names the material after its own; point usemtl at ours
    lines = [f"usemtl {asset.name}_material" if line.startswith("usemtl ") else line for line in text.splitlines()]
    return {f"{stem}.obj": ("\n".join(lines) + "\n").encode(), f"{stem}.mtl": mtl.encode(), texture_file: png_bytes(asset.texture)}


def ply_files(asset: Asset, stem: str) -> dict[str, bytes]:
    """Binary PLY with vertex colours (a textured asset's texture sampled at its vertices) and normals."""
    import trimesh

    colours = asset.colours if asset.uvs is None else sample_texture(asset.texture, asset.uvs)
    mesh = trimesh.Trimesh(asset.vertices, asset.faces, vertex_colors=colours, vertex_normals=normals_of(asset), process=False)
    from trimesh.exchange.ply import export_ply

    return {f"{stem}.ply": export_ply(mesh, encoding="binary", vertex_normal=True, include_attributes=False)}


Writer = Callable[[Asset, str], Dict[str, bytes]]
WRITERS: Dict[str, Writer] = {"glb": glb_files, "gltf": gltf_files, "obj": obj_files, "ply": ply_files}
FORMATS = tuple(WRITERS)


def asset_files(asset: Asset, format: str, stem: str) -> dict[str, bytes]:
    """The files of ``asset`` in ``format``: {file name: contents}, the main file first."""
    if format not in WRITERS:
        raise UserInputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return WRITERS[format](asset, stem)


def write_files(files: dict[str, bytes], folder: Path) -> None:
    """Write the files all or nothing (:func:`meshdream.atomic_files.atomic_write_files`): a failure (a full disk)
    leaves no file of the set changed; the main (first) file is renamed into place last, so its presence means the
    set is complete."""
    from ..atomic_files import atomic_write_files

    names = list(files)
    atomic_write_files({Path(folder) / name: files[name] for name in names[1:] + names[:1]})


def write_asset(asset: Asset, path: Path, format: str) -> Path:
    """Write ``asset`` as ``path`` (its format's main file) plus any side files beside it."""
    path = Path(path)
    files = asset_files(asset, format, path.stem)
    main = next(iter(files))
    if main != path.name:  # e.g. a user's --output name with another suffix
        files = {path.name: files.pop(main), **files}
    write_files(files, path.parent)
    return path
