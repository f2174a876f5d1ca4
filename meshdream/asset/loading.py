"""Loading a RUN's asset: the refined textured mesh, or the coarse mesh with vertex colours."""
from __future__ import annotations

import warnings

import numpy as np

from ..engine.run import RunDir, no_result, read_prompt, read_yaml, reading, rerun
from ..errors import UserInputError
from .model import Asset, check_mesh, check_texture


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
