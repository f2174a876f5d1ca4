"""Wavefront OBJ + MTL + PNG texture."""
from __future__ import annotations

from ..model import GENERATOR, Asset, png_bytes, to_trimesh


def obj_files(asset: Asset, stem: str, texture_file: str | None = None) -> dict[str, bytes]:
    """OBJ with vertex normals (vn) and UVs + MTL + PNG texture (named ``texture_file``, default STEM.png);
    a vertex-coloured asset writes colours after the positions (the common `v x y z r g b` extension)."""
    from trimesh.exchange.obj import export_obj

    from ... import __version__

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
