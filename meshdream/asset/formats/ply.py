"""Binary PLY with vertex colours and normals."""
from __future__ import annotations

from ...texture.sampling import sample_texture
from ..model import Asset, normals_of


def ply_files(asset: Asset, stem: str) -> dict[str, bytes]:
    """Binary PLY with vertex colours (a textured asset's texture sampled at its vertices) and normals."""
    import trimesh

    colours = asset.colours if asset.uvs is None else sample_texture(asset.texture, asset.uvs)
    mesh = trimesh.Trimesh(asset.vertices, asset.faces, vertex_colors=colours, vertex_normals=normals_of(asset), process=False)
    from trimesh.exchange.ply import export_ply

    return {f"{stem}.ply": export_ply(mesh, encoding="binary", vertex_normal=True, include_attributes=False)}
