"""Refine stage: the coarse mesh's vertices and a UV texture optimised by SDS through differentiable
rasterisation (nvdiffrast on CUDA, our C++ rasteriser on CPU).

coarse mesh -> xatlas UVs -> texture baked from the coarse NeRF's albedo -> (per step) cameras ->
rasterise + texture + shade + antialias -> SDS + Laplacian + normal consistency -> Adam step ->
RUN/refine/mesh.obj + mesh.mtl + texture.png
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional, Tuple

import numpy as np
import torch

from .. import raster as dr
from ..asset.formats import WRITERS, write_files
from ..asset.model import Asset, check_mesh
from ..texture.bake import bake_texture, bake_vertex_colours
from ..render.cameras import CameraConfig, sample_cameras, turntable_cameras
from ..config import ITERS_MAX, SEED_MAX, bounded, build_config, given_settings, resume_settings
from ..engine.device import resolve_device
from ..errors import UserInputError
from ..guidance import GuidanceConfig, load_guidance
from ..render.mesh_render import render_mesh
from ..mesh.geometry import vertex_normals
from ..mesh.losses import edges_of, face_pairs, laplacian_loss, normal_consistency_loss
from ..engine.run import CorruptRunFileError, RunDir, locks_run, read_prompt, read_yaml, reading, rerun
from ..engine.previews import save_strip
from ..render.shading import ShadingConfig, shading_for_step
from ..engine.provenance import StaleStageError, check_stages, mark_started, outputs_match, read_record, record_intact, write_record
from ..engine.stage_loop import StageLoop, prepare_folder, ramp, restoring, seeded_generator, start_stage
from ..engine.device import device_errors
from ..mesh.uv import unwrap


@dataclass
class RefineConfig:
    """Defaults: the embedded prior on a CPU (written out in configs/refine.yaml); ``--preset sd`` for SD on a GPU."""

    preset_section: ClassVar[str] = "refine"  # its section in meshdream/presets/*.yaml

    iters: int = bounded(200, ge=1, le=ITERS_MAX)
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    # views per step. 1 (was 2): the embedded prior's UNet is 2/3 of a refine step (66-70%, profiled) and its cost
    # grows with the batch, so 1 view takes a third off the loop (11.2 -> 7.6 s, 2 threads); on the 30 prompts (seed
    # 0, same coarse meshes) shape and colour votes were identical, median Chamfer 1.69 vs 1.67 %, normals 21.5 vs
    # 21.0 deg. 100 steps of 2 views cost the same and lost colour votes (docs/quality.md, "Refine: one view per step")
    batch_size: int = bounded(1, ge=1, le=256)
    resolution: Optional[int] = bounded(None, ge=8, le=4096)  # render size; None: the guidance model's resolution
    supersample: int = bounded(2, ge=1, le=8)  # render at resolution * supersample, average down (smoother edges and texture)
    texture_size: int = bounded(256, ge=16, le=8192)
    lr_texture: float = bounded(0.02, ge=0)  # on texture logits
    lr_vertices: float = bounded(0.0005, ge=0)  # on vertex offsets (scene units)
    laplacian_weight: Tuple[float, float] = (200.0, 200.0)  # linear ramps over the run
    normal_weight: Tuple[float, float] = (50.0, 50.0)
    max_faces: int = bounded(20000, ge=4)  # decimate a denser coarse mesh before unwrapping
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    checkpoint_every: int = bounded(50, ge=1)
    preview_every: int = bounded(100, ge=0)  # 0: no previews
    preview_views: int = bounded(6, ge=1, le=64)
    preview_resolution: int = bounded(96, ge=8, le=2048)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    shading: ShadingConfig = field(default_factory=lambda: ShadingConfig(albedo_only_steps=0))


@dataclass
class RefineState:
    """What the optimisation works on: welded base vertices [Vw, 3], split mesh (vmapping, faces, uvs)."""

    base: torch.Tensor
    vmapping: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    welded_faces: torch.Tensor


def _load_coarse(run: RunDir, cfg: RefineConfig, ctx, device) -> tuple[RefineState, torch.Tensor]:
    """Coarse mesh -> decimated, unwrapped mesh and the initial texture [T, T, 3]."""
    import trimesh

    from ..mesh import clean_mesh

    with reading(run.coarse_mesh, rerun(run, "coarse")):
        mesh = trimesh.load(run.coarse_mesh, process=False, force="mesh")
        v = np.asarray(mesh.vertices, dtype=np.float32)
        f = np.asarray(mesh.faces, dtype=np.int64)
        if len(f):
            check_mesh(v, f)
    colours = None
    if getattr(mesh.visual, "vertex_colors", None) is not None and len(mesh.visual.vertex_colors) == len(v):
        colours = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    if len(f) == 0:
        raise UserInputError(f"the coarse mesh {str(run.coarse_mesh)!r} has no faces; run the coarse stage again")
    if len(f) > cfg.max_faces:
        v, f, colours = clean_mesh(v, f, colours, min_component_fraction=0, target_faces=cfg.max_faces)
    uv = unwrap(v, f, resolution=cfg.texture_size)
    state = RefineState(base=torch.from_numpy(v).to(device), vmapping=torch.from_numpy(uv.vmapping).to(device),
                        faces=torch.from_numpy(uv.faces).to(device), uvs=torch.from_numpy(uv.uvs).to(device),
                        welded_faces=torch.from_numpy(f).to(device))
    positions = state.base[state.vmapping]
    if run.coarse_field.is_file():
        from ..nerf.field import load_field

        field_ = load_field(run.coarse_field, device, remedy=rerun(run, "coarse"))
        texture = bake_texture(ctx, positions, state.faces, state.uvs, cfg.texture_size, lambda x: field_.albedo(x).float())
    elif colours is not None:
        texture = bake_vertex_colours(ctx, torch.from_numpy(colours)[state.vmapping.cpu()].to(device), state.faces, state.uvs,
                                      cfg.texture_size)
    else:
        texture = torch.full((cfg.texture_size, cfg.texture_size, 3), 0.7, device=device)
    return state, texture


def _state_dict(state: RefineState) -> dict:
    return {k: getattr(state, k).cpu() for k in ("base", "vmapping", "faces", "uvs", "welded_faces")}


def _state_from(d: dict, device) -> RefineState:
    return RefineState(**{k: d[k].to(device) for k in ("base", "vmapping", "faces", "uvs", "welded_faces")})


def save_textured_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray,
                      extras: dict | None = None, texture_file: str = "texture.png") -> None:
    """Write path (OBJ, with normals) + its MTL + ``texture_file`` beside it through the OBJ asset writer.
    texture [T, T, 3] in [0, 1], row r <-> v = (r + 0.5) / T."""
    png = (np.clip(texture[::-1], 0, 1) * 255).round().astype(np.uint8)  # PNG row 0 = top = v 1
    asset = Asset(np.asarray(vertices, np.float32), np.asarray(faces, np.int64), uvs=np.asarray(uvs, np.float32),
                  texture=np.ascontiguousarray(png), extras=extras or {})
    write_files(WRITERS["obj"](asset, path.stem, texture_file=texture_file), path.parent)


@locks_run("refine", lambda run, **_: RunDir.existing(run))
@device_errors("refine")
def refine(run: str | os.PathLike, *, config=None, guidance: str | None = None, iters: int | None = None,
           texture_size: int | None = None, seed: int | None = None, device: str | None = None, resume: bool = False,
           progress: bool = True, negative_prompt: str | None = None, preset: str | None = None, overrides=None) -> Path:
    """Refine RUN's coarse mesh and texture by SDS. Returns RUN/refine/mesh.obj.

    Config as for :func:`meshdream.stages.coarse.coarse`. ``negative_prompt`` replaces the one the coarse
    stage used (default: the same). With ``resume``, continues RUN's refine checkpoint (see :mod:`meshdream.engine.stage_loop`
    for which options a resume honours)."""
    settings = resume_settings(config, preset, overrides) if resume else None
    if settings is None:
        config = build_config(RefineConfig, config, preset, overrides) or config
    run_dir = RunDir.existing(run)
    coarse_record = check_stages(run_dir, "coarse")  # an unfinished or changed coarse stage: says how to continue
    coarse_fingerprint = None if coarse_record is None else coarse_record["fingerprint"]
    info = read_prompt(run_dir)
    RunDir.create(run_dir.root)  # writable?
    stage = run_dir.refine
    overrides: dict = {"iters": iters, "seed": seed, "texture_size": texture_size,
                       "guidance": None if guidance is None else {"name": guidance}}
    if not resume and config is None and guidance is None:
        # follow the coarse stage's guidance model unless told otherwise (not an override the user gave)
        coarse_guidance = stage_config_guidance(run_dir)
        if coarse_guidance is not None:
            overrides["guidance"] = {"name": coarse_guidance}
    start = start_stage("refine", stage, RefineConfig, config, given_settings(overrides, settings), resume)
    cfg, saved = start.cfg, start.saved
    upstream = saved.get("upstream") if saved is not None else None
    if saved is not None and (upstream.get("coarse") if isinstance(upstream, dict) else None) != coarse_fingerprint:
        raise StaleStageError(f"--resume: {str(stage / 'checkpoint.pt')!r} continues the refinement of an earlier coarse result "
                              f"(the coarse stage ran again since); refine the new one: `meshdream refine {run_dir.root}` "
                              "(without --resume)")
    if start.finished(run_dir.refined_mesh) and record_intact(run_dir, "refine"):
        return run_dir.refined_mesh
    dev = resolve_device(device)
    ctx = dr.get_context(dev)
    guide = load_guidance(cfg.guidance, dev)  # before the stage folder changes: a model that cannot load leaves it as it was
    prepare_folder(stage)
    mark_started(stage, "refine")
    if saved is not None and "negative_prompt" in saved:  # a resumed run keeps its own
        negative_prompt = saved["negative_prompt"]
    elif negative_prompt is None:
        negative_prompt = info.get("negative_prompt") or ""
    embeddings = guide.encode_prompt(info["prompt"], negative_prompt or None)
    resolution = (cfg.resolution or guide.resolution) * cfg.supersample

    g = seeded_generator(cfg.seed)
    if saved is not None:
        with restoring(run_dir.checkpoint("refine"), "refine"):
            state = _state_from(saved["mesh"], dev)
            offsets = saved["offsets"].to(dev).requires_grad_(True)
            tex_logits = saved["texture_logits"].to(dev).requires_grad_(True)
            if tex_logits.shape != (cfg.texture_size, cfg.texture_size, 3) or offsets.shape != state.base.shape:
                raise ValueError(f"texture {tuple(tex_logits.shape)}, offsets {tuple(offsets.shape)}")
    else:
        state, texture = _load_coarse(run_dir, cfg, ctx, dev)
        offsets = torch.zeros_like(state.base, requires_grad=True)
        tex_logits = torch.logit(texture.clamp(0.02, 0.98)).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [tex_logits], "lr": cfg.lr_texture}, {"params": [offsets], "lr": cfg.lr_vertices}])
    if saved is not None:
        with restoring(run_dir.checkpoint("refine"), "refine"):
            optimizer.load_state_dict(saved["optimizer"])
        for group, lr in zip(optimizer.param_groups, (cfg.lr_texture, cfg.lr_vertices)):  # lrs may change on --resume
            group["lr"] = lr
    loop = StageLoop("refine", stage, cfg, g, progress=progress, meta={"upstream": {"coarse": coarse_fingerprint}, "negative_prompt": negative_prompt},
                     state=lambda: {"mesh": _state_dict(state), "offsets": offsets.detach().cpu(),
                                    "texture_logits": tex_logits.detach().cpu(), "optimizer": optimizer.state_dict()})
    loop.restore(saved)
    loop.save_config()
    edges = torch.from_numpy(edges_of(state.welded_faces.cpu().numpy())).to(dev)
    pairs = torch.from_numpy(face_pairs(state.welded_faces.cpu().numpy())).to(dev)

    def current():
        verts = (state.base + offsets)[state.vmapping]
        return verts, torch.sigmoid(tex_logits)

    def shading_normals():
        """[Vs, 3] normals of the welded mesh, copied to the UV-split vertices: the split mesh's own
        would differ on the two sides of every UV seam and draw the seams into the shading."""
        return vertex_normals(state.base + offsets, state.welded_faces)[state.vmapping]

    def preview(path: Path, final: bool) -> None:
        with torch.no_grad():
            verts, tex = current()
            cams = turntable_cameras(cfg.preview_views, distance=sum(cfg.cameras.distance_range) / 2).to(dev)
            images, _ = render_mesh(ctx, verts, state.faces, state.uvs, tex, cams, cfg.preview_resolution, "lambertian",
                                    cfg.background, cfg.shading.ambient, cfg.shading.diffuse, normals=shading_normals())
            save_strip(images, path)

    background = tuple(cfg.background)

    def compute_loss(step: int, frac: float) -> tuple[torch.Tensor, str]:
        cams = sample_cameras(cfg.batch_size, cfg.cameras, g).to(dev)
        mode = shading_for_step(cfg.shading, step, g)
        verts, tex = current()
        images, _ = render_mesh(ctx, verts, state.faces, state.uvs, tex, cams, resolution, mode, background,
                                cfg.shading.ambient, cfg.shading.diffuse,
                                normals=shading_normals() if mode != "albedo" else None)
        if cfg.supersample > 1:
            images = torch.nn.functional.avg_pool2d(images, cfg.supersample)
        sds = guide.sds_loss(images, embeddings, cams.azimuth, cams.elevation, frac, generator=g)
        welded = state.base + offsets
        loss = (sds.loss + ramp(cfg.laplacian_weight, frac) * laplacian_loss(offsets, edges)
                + ramp(cfg.normal_weight, frac) * normal_consistency_loss(welded, state.welded_faces, pairs))
        return loss, mode

    loop.run(compute_loss, optimizer, preview)
    with torch.no_grad():
        verts, tex = current()
    save_textured_obj(run_dir.refined_mesh, verts.cpu().numpy(), state.faces.cpu().numpy(), state.uvs.cpu().numpy(),
                      tex.cpu().numpy(), texture_file=run_dir.refined_texture.name)
    loop.finish()
    write_record(stage, "refine", prompt=info["prompt"], negative_prompt=negative_prompt or "", config=cfg,
                 upstream={"coarse": coarse_fingerprint},
                 outputs=[p for p in (run_dir.refined_mesh, run_dir.refined_material, run_dir.refined_texture) if p.is_file()])
    if progress:
        print(f"refine: {loop.summary()}, {len(state.faces)} faces, texture {cfg.texture_size}x{cfg.texture_size}")
    return run_dir.refined_mesh


def stage_config_guidance(run: RunDir) -> str | None:
    """The guidance model name the coarse stage of RUN used."""
    path = run.config_file("coarse")
    if not path.is_file():
        return None
    data = read_yaml(path, rerun(run, "coarse"))
    name = (data.get("guidance") or {}).get("name") if isinstance(data.get("guidance") or {}, dict) else None
    if name is not None and not isinstance(name, str):
        raise CorruptRunFileError(f"RUN file {str(path)!r} names no guidance model (guidance.name: {name!r}); "
                                  f"{rerun(run, 'coarse')}")
    return name
