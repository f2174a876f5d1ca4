"""glTF 2.0: binary (GLB) and JSON with the buffer embedded (one self-contained file)."""
from __future__ import annotations

from typing import Callable

from ..model import GENERATOR, Asset, to_trimesh


# glTF bufferView targets (glTF 2.0 spec 3.6.2.1): vertex attributes vs. indices
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def _gltf_tree_fixer(asset: Asset) -> Callable[[dict], None]:
    """Name the node / mesh / material, say who made the file and how, and set bufferView targets."""
    from ... import __version__

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
