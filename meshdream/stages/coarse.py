"""Coarse stage: a hash-grid NeRF optimised by SDS from random cameras, meshed by our marching cubes.

prompt -> guidance embeddings -> (per step) cameras -> volume render -> SDS + regularisers -> Adam step
-> (at the end) density grid -> marching cubes -> clean mesh with albedo colours -> RUN/coarse/mesh.ply
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional, Tuple

import torch

from ..render.cameras import CameraConfig, coarse_camera_config, sample_cameras, turntable_cameras
from ..engine.checkpoint import save_checkpoint
from ..config import ITERS_MAX, SEED_MAX, bounded, build_config, given_settings, resume_settings
from ..engine.device import resolve_device
from ..errors import MeshdreamError, UserInputError
from ..guidance import GuidanceConfig, load_guidance
from ..guidance.base import check_prompt
from ..nerf.background import LearnedBackground
from ..nerf.extract import ExtractConfig, extract_mesh
from ..nerf.field import FieldConfig, NeRFField, save_field_state
from ..nerf.field_kinds import FIELD_KINDS
from ..nerf.hash_grid import HashGridConfig
from ..nerf.volume_render import OccupancyGrid, border_opacity_loss, frame_border_opacity, orientation_loss, render_cameras, sparsity_loss
from ..engine.previews import save_strip
from ..engine.provenance import mark_started, record_intact, write_record
from ..engine.run import RunDir, locks_run, write_prompt
from ..render.shading import ShadingConfig, shading_for_step
from ..engine.stage_loop import StageLoop, prepare_folder, ramp, restoring, seeded_generator, start_stage
from ..engine.device import device_errors


MAX_DEFAULT_RESOLUTION = 64  # NeRF renders when the config names no resolution


@dataclass
class OccupancyConfig:
    enabled: bool = True
    resolution: int = bounded(32, ge=2, le=512)
    update_every: int = bounded(16, ge=1)
    threshold: float = 0.5  # density below which a cell is skipped
    decay: float = bounded(0.9, ge=0, le=1)


@dataclass
class CoarseConfig:
    """Defaults: the embedded prior on a CPU (written out in configs/coarse.yaml). GPU presets: ``--preset sd``, ``--preset if``."""

    preset_section: ClassVar[str] = "coarse"  # its section in meshdream/presets/*.yaml

    iters: int = bounded(400, ge=1, le=ITERS_MAX)
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    batch_size: int = bounded(1, ge=1, le=256)  # views per step
    # render size; None: the guidance model's resolution, at most 64 (a latent model's 512 px input is the
    # 64 px render upsampled, as in DreamFusion / threestudio: a 512 px NeRF render costs 64x the rays)
    resolution: Optional[int] = bounded(None, ge=8, le=4096)
    supersample: int = bounded(1, ge=1, le=8)  # render at resolution * supersample, then average down
    num_samples: int = bounded(32, ge=1, le=4096)  # samples per ray
    bound: float = bounded(1.0, gt=0)  # scene cube [-bound, bound]^3
    lr: float = bounded(0.005, gt=0)  # hash-grid table
    # the MLP's weights act on every point at once (its output bias lifts density everywhere), so they
    # learn slower than the local table entries, as in threestudio (0.001 vs 0.01) and stable-dreamfusion
    mlp_lr_scale: float = bounded(0.1, gt=0, le=10)
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # solid colour (the embedded prior is trained on white)
    # learn a view-dependent background starting from that colour (nerf/background.py), as DreamFusion
    # does to absorb SDS's pull to colour the whole frame. Off: with the 32 px prior it did not stop the
    # growth (cube and torus reached the box with and without it, measured), and white is what the prior knows
    learned_background: bool = False
    background_lr: float = bounded(0.01, gt=0)
    orientation_weight: Tuple[float, float] = (0.0, 10.0)  # linear ramp over the run (steps with normals only)
    sparsity_weight: Tuple[float, float] = (0.0, 0.5)
    # mean opacity of each SDS view's outer border_width-pixel ring (of the 32 px render; scaled by
    # supersample), a linear ramp: every image the prior learned shows its object inside the frame, and
    # against the fill-the-frame collapse ("a yellow cube", "a purple cube" filled it on every seed with
    # 0; sparsity up to 5 and a smaller start sphere did not stop it; 50 stopped the yellow cube but not
    # the purple one, 200 both; measured, docs/design.md "The border term"). No pull on an object inside the frame
    border_weight: Tuple[float, float] = (200.0, 200.0)
    border_width: int = bounded(2, ge=1, le=64)
    # nerf.kind "sdf": weight of the eikonal term (a linear ramp) and how many points of the box (uniform) it
    # checks per step. Weak: a strong one keeps the start sphere's topology (the torus's hole stayed shut with
    # 1 throughout and with 0.1 -> 10, and opened with 0.1, measured); a weak one leaves cubes bumpy
    eikonal_weight: Tuple[float, float] = (0.1, 0.1)
    eikonal_points: int = bounded(4096, ge=1, le=1 << 22)
    # nerf.kind "sdf": |n(x) - n(x + jitter)|^2 at the rendered surface points, jittered by surface_jitter
    # (threestudio's 3D normal smoothness): against the bumpy surfaces SDS carves. Ramped up so the torus's
    # hole opens first: 0 -> 1 left a green sphere genus 8 after closing, 0 -> 10 genus 0 (raw 31 vs 4),
    # 0 -> 30 shut the torus's hole again (measured, docs/design.md)
    normal_smooth_weight: Tuple[float, float] = (0.0, 10.0)
    surface_jitter: float = bounded(0.05, ge=0)
    # nerf.kind "sdf": start with this Laplace scale and shrink it geometrically to nerf.sdf_beta by the end
    # (NeuS's sharpening): a soft surface lets SDS's gradient reach into a solid (a torus's hole can open),
    # a sharp one gives a clean level set. None: nerf.sdf_beta throughout
    sdf_beta_start: Optional[float] = bounded(0.3, gt=0)
    checkpoint_every: int = bounded(50, ge=1)
    preview_every: int = bounded(100, ge=0)  # 0: no previews
    preview_views: int = bounded(6, ge=1, le=64)
    preview_resolution: int = bounded(48, ge=8, le=2048)
    # the run stops when the preview views' border ring is more opaque than this: the field fills the
    # frame instead of showing an object (checked at every preview and before extraction; 1.0: never)
    max_frame_fill: float = bounded(0.5, ge=0, le=1)
    collapse_check_every: int = bounded(25, ge=0)  # cheap frame-fill check (4 small views) this often; 0: only at previews
    restarts: int = bounded(3, ge=0, le=100)  # a run that fills the frame starts over from step 0 with the next seed, this many times
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    # views from 40-60 degrees up: the prior shows a torus's hole only from above (its SDS update asks for
    # the hole at 45 degrees, hardly at 0-30: scripts/probe_sds_update.py). Through the hole of the prior's
    # torus (hole radius 0.34 s, tube radius 0.28 s) the background shows only above ~40 degrees, so at
    # 30-45 SDS could answer with a shaded dimple: the yellow and orange tori stayed shut at 30-45 and
    # opened at 40-60 (measured, docs/design.md). Past the prior's 45 degrees, but still labelled as its views
    # (overhead starts at 60). refine's cameras still see the underside
    cameras: CameraConfig = field(default_factory=coarse_camera_config)
    # progressive views (threestudio's progressive_until): the cameras' elevation range at step 0, widened
    # linearly to cameras.elevation_range at this fraction of the run. None: the full range throughout
    elevation_start: Optional[Tuple[float, float]] = None
    elevation_until: float = bounded(0.5, gt=0, le=1)
    # a coarse grid (4 levels up to 32^3) keeps a 32 px prior from carving spikes; GPU presets use 16 levels
    # and a compact start blob (density > 0.5 within r < 0.76, a third of the box): DreamFusion's wider,
    # denser blob fills 90% of the box with haze from step 0, which SDS then grows into a box-sized ball.
    # kind "sdf" (density from a signed distance, VolSDF): the density kind never opened a torus's hole
    # (0 of 10 tori); the handles the sdf kind leaves on cubes are closed at extraction (extract.close_radius).
    # docs/design.md, "The coarse field", has the measurements. blob_scale / density_bias serve kind "density"
    nerf: FieldConfig = dataclasses.field(default_factory=lambda: FieldConfig(kind="sdf", hash_grid=HashGridConfig(levels=4, max_resolution=32),
                                                                               blob_scale=5.0, density_bias=-2.0))
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)


def _overrides(iters, seed, guidance) -> dict:
    return {"iters": iters, "seed": seed, "guidance": None if guidance is None else {"name": guidance}}


@torch.no_grad()
def render_preview(field_: NeRFField, cfg: CoarseConfig, device: torch.device, occupancy: OccupancyGrid | None = None,
                   shading: str = "lambertian") -> tuple[torch.Tensor, float]:
    """Turntable views [N, 3, H, W] of the field (light at the camera), skipping empty space, and the
    opacity of their border ring (see frame_border_opacity)."""
    cams = turntable_cameras(cfg.preview_views, distance=sum(cfg.cameras.distance_range) / 2).to(device)
    images, out = render_cameras(field_, cams, cfg.preview_resolution, num_samples=cfg.num_samples, bound=cfg.bound,
                                 shading=shading, background=torch.tensor(cfg.background, device=device), occupancy=occupancy,
                                 with_normals=False, ambient=cfg.shading.ambient, diffuse=cfg.shading.diffuse)
    return images, frame_border_opacity(out.opacity.view(len(cams), cfg.preview_resolution, cfg.preview_resolution))


class FrameFilledError(MeshdreamError):
    """The field fills the frame: SDS grew density everywhere instead of shaping an object."""

    def __init__(self, message: str, config: CoarseConfig, step: int):
        super().__init__(message)
        self.config, self.step = config, step


def check_frame(border: float, cfg: CoarseConfig, step: int, where: str) -> None:
    """Raise FrameFilledError when the views' border ring is more opaque than cfg.max_frame_fill."""
    if border > cfg.max_frame_fill:
        raise FrameFilledError(
            f"coarse: at step {step} the field fills the frame (opacity {border:.2f} at the borders of {where}, allowed "
            f"max_frame_fill = {cfg.max_frame_fill}): SDS grew density everywhere instead of shaping an object", cfg, step)


def save_checked_preview(field_: NeRFField, cfg: CoarseConfig, device: torch.device, occupancy: OccupancyGrid | None, path: Path,
                         step: int, shading: str = "albedo") -> None:
    """Write a preview strip, then stop the run if the field fills the frame (before it wastes the rest
    of the run and hands a box to refine)."""
    images, border = render_preview(field_, cfg, device, occupancy, shading)
    save_strip(images, path)
    check_frame(border, cfg, step, f"the preview {path.name}")


@torch.no_grad()
def quick_frame_check(field_: NeRFField, cfg: CoarseConfig, device: torch.device, occupancy: OccupancyGrid | None, step: int) -> None:
    """The frame-fill check on 4 turntable views at 24 px (a few ms), between previews."""
    cams = turntable_cameras(4, distance=sum(cfg.cameras.distance_range) / 2).to(device)
    _, out = render_cameras(field_, cams, 24, num_samples=cfg.num_samples, bound=cfg.bound, shading="albedo",
                            background=torch.tensor(cfg.background, device=device), occupancy=occupancy, with_normals=False)
    check_frame(frame_border_opacity(out.opacity.view(4, 24, 24)), cfg, step, "4 turntable views")


def cameras_at(cfg: CoarseConfig, frac: float) -> CameraConfig:
    """The camera ranges at progress frac: cfg.cameras, with the elevation range widened from
    cfg.elevation_start while frac < cfg.elevation_until."""
    if cfg.elevation_start is None:
        return cfg.cameras
    p = min(frac / cfg.elevation_until, 1.0)
    lo = tuple(ramp((a, b), p) for a, b in zip(cfg.elevation_start, cfg.cameras.elevation_range))
    return dataclasses.replace(cfg.cameras, elevation_range=lo)


def _open_run(prompt, out, **_) -> RunDir:
    check_prompt(prompt)
    return RunDir.create(out)


@locks_run("coarse", _open_run)
@device_errors("coarse")
def coarse(prompt: str, out: str | os.PathLike, *, config=None, guidance: str | None = None, iters: int | None = None,
           seed: int | None = None, device: str | None = None, resume: bool = False, negative_prompt: str | None = None,
           progress: bool = True, preset: str | None = None, overrides=None) -> Path:
    """Optimise a NeRF for ``prompt`` by SDS and extract its mesh. Returns RUN/coarse/mesh.ply.

    Config: defaults < ``preset`` < ``config`` (YAML path or CoarseConfig) < ``overrides`` (``["key=value", ...]``
    or a mapping of dotted keys) < the named options (iters, seed, guidance).

    A run whose field fills the frame (the SDS collapse) starts over with the next seed, up to
    ``restarts`` times, and says so; after that it stops with what happened and what to change.
    With ``resume``, continues RUN's coarse checkpoint (see :mod:`meshdream.engine.resume` for which settings
    may change on a resume)."""
    settings = resume_settings(config, preset, overrides) if resume else None
    if settings is None:
        config = build_config(CoarseConfig, config, preset, overrides) or config
    seeds = []
    while True:
        try:
            return _coarse_once(prompt, out, config=config, guidance=guidance, iters=iters, seed=seed, device=device,
                                resume=resume, negative_prompt=negative_prompt, progress=progress, settings=settings)
        except FrameFilledError as e:
            seeds.append(e.config.seed)
            if len(seeds) > e.config.restarts:
                start = FIELD_KINDS[e.config.nerf.kind].start_shape
                raise MeshdreamError(f"{e} with every seed tried ({', '.join(map(str, seeds))}). Try other seeds (--seed), "
                                     f"{start}, or a higher border_weight or sparsity_weight in the coarse config") from None
            config, seed, iters, guidance, resume = dataclasses.replace(e.config, seed=e.config.seed + 1), None, None, None, False
            settings = None  # e.config holds them
            print(f"{e}; starting over with seed {config.seed} ({len(seeds)} of {config.restarts} restarts)", flush=True)


def _coarse_once(prompt: str, out: str | os.PathLike, *, config=None, guidance: str | None = None, iters: int | None = None,
                 seed: int | None = None, device: str | None = None, resume: bool = False, negative_prompt: str | None = None,
                 progress: bool = True, settings: dict | None = None) -> Path:
    prompt = check_prompt(prompt)
    run = RunDir.create(out)
    stage = run.coarse
    start = start_stage("coarse", stage, CoarseConfig, config, given_settings(_overrides(iters, seed, guidance), settings), resume)
    cfg, state = start.cfg, start.saved
    if state is not None:
        if state.get("prompt") != prompt:
            raise UserInputError(f"--resume: RUN {str(run.root)!r} was made for the prompt {state.get('prompt')!r}, not {prompt!r}")
        negative_prompt = state.get("negative_prompt", negative_prompt)
        if start.finished(run.coarse_mesh) and record_intact(run, "coarse"):
            return run.coarse_mesh  # (outputs that no longer match the record are written again from the checkpoint)
    dev = resolve_device(device)
    guide = load_guidance(cfg.guidance, dev)  # before the stage folder changes: a model that cannot load leaves it as it was
    prepare_folder(stage)
    mark_started(stage, "coarse")
    embeddings = guide.encode_prompt(prompt, negative_prompt)
    resolution = cfg.resolution or min(guide.resolution, MAX_DEFAULT_RESOLUTION)

    g = seeded_generator(cfg.seed)  # seeds the field's initial weights too
    field_ = NeRFField(cfg.nerf, cfg.bound).to(dev)
    params = [{"params": list(field_.encoding.parameters()), "lr": cfg.lr},
              {"params": list(field_.mlp.parameters()), "lr": cfg.lr * cfg.mlp_lr_scale}]
    bg_model = LearnedBackground(cfg.background).to(dev) if cfg.learned_background else None
    if bg_model is not None:
        params.append({"params": list(bg_model.parameters()), "lr": cfg.background_lr})
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)
    occupancy = (OccupancyGrid(cfg.occupancy.resolution, cfg.bound, cfg.occupancy.decay, cfg.occupancy.threshold, device=dev)
                 if cfg.occupancy.enabled else None)
    if state is not None:
        with restoring(run.checkpoint("coarse"), "coarse"):
            field_.load_state_dict(state["field"]["state"])
            if bg_model is not None:
                bg_model.load_state_dict(state["background"])
            optimizer.load_state_dict(state["optimizer"])
            if occupancy is not None and state.get("occupancy") is not None:
                occupancy.load_state_dict(state["occupancy"])
        lrs = [cfg.lr, cfg.lr * cfg.mlp_lr_scale] + ([cfg.background_lr] if bg_model is not None else [])
        for group, lr in zip(optimizer.param_groups, lrs):  # learning rates may change on --resume
            group["lr"] = lr
    meta = {"prompt": prompt, "negative_prompt": negative_prompt or "", "seed": cfg.seed}
    loop = StageLoop("coarse", stage, cfg, g, meta=meta, progress=progress,
                     state=lambda: {"field": save_field_state(field_), "optimizer": optimizer.state_dict(),
                                    "occupancy": occupancy.state_dict() if occupancy is not None else None,
                                    "background": bg_model.state_dict() if bg_model is not None else None})
    loop.restore(state)
    loop.save_config()
    write_prompt(run, meta)

    background = torch.tensor(cfg.background, device=dev)
    side = resolution * cfg.supersample  # the SDS renders' size before they are averaged down to the prior's

    def compute_loss(step: int, frac: float) -> tuple[torch.Tensor, str]:
        field_.kind.anneal(field_, cfg, frac)
        if occupancy is not None and step % cfg.occupancy.update_every == 0:
            occupancy.update(field_.density, g)
        cams = sample_cameras(cfg.batch_size, cameras_at(cfg, frac), g).to(dev)
        mode = shading_for_step(cfg.shading, step, g)
        images, rendered = render_cameras(field_, cams, side, num_samples=cfg.num_samples, bound=cfg.bound,
                                          shading=mode, background=bg_model if bg_model is not None else background,
                                          occupancy=occupancy, generator=g, with_normals=False, ambient=cfg.shading.ambient, diffuse=cfg.shading.diffuse)
        if cfg.supersample > 1:
            images = torch.nn.functional.avg_pool2d(images, cfg.supersample)
        sds = guide.sds_loss(images, embeddings, cams.azimuth, cams.elevation, frac, generator=g)
        loss = (sds.loss + ramp(cfg.orientation_weight, frac) * orientation_loss(rendered)
                + ramp(cfg.sparsity_weight, frac) * sparsity_loss(rendered))
        border_weight = ramp(cfg.border_weight, frac)
        if border_weight > 0:
            loss = loss + border_weight * border_opacity_loss(rendered.opacity.view(len(cams), side, side), cfg.border_width * cfg.supersample)
        for term in field_.kind.losses(field_, cfg, frac, g, cams, rendered, side, dev):  # e.g. sdf: eikonal, normal smoothness
            loss = loss + term
        return loss, mode

    done_steps = [loop.start]

    def after_step(done: int) -> None:
        done_steps[0] = done
        previewed = bool(cfg.preview_every) and done % cfg.preview_every == 0  # the preview checks it then
        if cfg.collapse_check_every and done % cfg.collapse_check_every == 0 and not previewed:
            quick_frame_check(field_, cfg, dev, occupancy, done)

    def preview(path: Path, final: bool) -> None:
        if final:
            field_.beta = cfg.nerf.sdf_beta
            field_.eval()  # the final strip is lit; the ones along the way show the albedo
            save_checked_preview(field_, cfg, dev, occupancy, path, cfg.iters, "lambertian")
        else:
            save_checked_preview(field_, cfg, dev, occupancy, path, done_steps[0])

    loop.run(compute_loss, optimizer, preview, after_step)
    field_.beta = cfg.nerf.sdf_beta  # the end of the annealing: the surface the saved field describes
    loop.checkpoint(cfg.iters)  # the trained field, so a failed extraction can be retried without training
    try:
        vertices, faces, colours = extract_mesh(field_, cfg.extract, cfg.bound, dev)
    except MeshdreamError as e:
        raise MeshdreamError(
            f"{e}. The trained field is kept (checkpoint of step {cfg.iters}): to extract again without training, change "
            f"extract.* in a copy of {str(stage / 'config.yaml')!r} and run `meshdream coarse PROMPT --out {run.root} --resume "
            "--config COPY`") from None
    _save_mesh(run.coarse_mesh, vertices, faces, colours)
    save_checkpoint(run.coarse_field, {"field": save_field_state(field_), **meta})
    loop.finish()
    write_record(stage, "coarse", prompt=prompt, negative_prompt=negative_prompt or "", config=cfg, upstream=None,
                 outputs=[run.coarse_mesh, run.coarse_field])
    if progress:
        print(f"coarse: {loop.summary()}, mesh {len(vertices)} vertices / {len(faces)} faces")
    return run.coarse_mesh


def _save_mesh(path: Path, vertices, faces, colours) -> None:
    import numpy as np
    import trimesh

    from ..atomic_files import atomic_write_bytes

    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=(np.clip(colours, 0, 1) * 255).astype(np.uint8), process=False)
    atomic_write_bytes(path, mesh.export(file_type="ply"))
