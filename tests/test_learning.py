"""The stages learn, and the prompt steers them: short coarse and refine runs with the shipped embedded prior.

Every other pipeline test runs on a tiny random prior, so it shows that the stages run, not that they learn.
Here the real prior (meshdream/guidance/embedded_prior) guides runs of the shipped configs, shrunk only in
size and length (no setting is chosen per prompt), and the tests check what a user would see:

- colour: "a red cube" and "a blue cube" (the same seed, so the same start) give fields whose renders turn
  red and blue: the hue of the change of their mean albedo is nearest to the asked one of the prior's six;
- shape: "a red cone" and "a red cube" give silhouettes that narrow towards the top for the cone only;
- loss: the prompt's denoising loss (the prior's error predicting fixed noise on fixed views of the field,
  the quantity SDS descends) is lower at the end than after the first steps;
- refine: a short refine of the red run moves the texture's colour further towards red.

docs/testing.md records the measurements behind the step counts (several seeds) and the mutations these
tests catch (SDS gradient zeroed, optimiser step skipped, the stages guided by another prompt).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from meshdream.render.cameras import turntable_cameras
from meshdream.engine.checkpoint import load_checkpoint
from meshdream.nerf.field import field_from_state, load_field
from meshdream.nerf.volume_render import render_cameras
from meshdream.prior.primitives import COLOURS
from meshdream.engine.stage_loop import step_hook

# the shipped coarse config, shorter and smaller (measured: docs/testing.md)
COARSE_ITERS = 90
COARSE = {"resolution": 16, "num_samples": 24, "preview_every": 0, "collapse_check_every": 0, "restarts": 0,
          "occupancy.resolution": 16, "eikonal_points": 512, "extract.resolution": 32, "extract.coarse_resolution": 16,
          "extract.target_faces": 300}
EARLY = 2  # the step whose field the loss is compared against (the checkpoint written after it)
REFINE_ITERS = 30
REFINE = {"resolution": 32, "supersample": 1, "texture_size": 32, "max_faces": 300, "preview_every": 0, "checkpoint_every": 1}


# ------------------------------------------------------------------------------------------ runs

def coarse_run(prompt: str, out: Path, seed: int = 0, iters: int = COARSE_ITERS) -> dict:
    """A coarse run; returns its final field and the field of step EARLY."""
    from meshdream.stages.coarse import coarse

    early = {}

    def keep_early(stage, done):
        if stage == "coarse" and done == EARLY:
            early["field"] = field_from_state(load_checkpoint(out / "coarse" / "checkpoint.pt")["field"])

    overrides = dict(COARSE, iters=iters, seed=seed, checkpoint_every=EARLY, **{"shading.albedo_only_steps": iters // 2})
    with step_hook(keep_early):
        coarse(prompt, out, overrides=overrides, progress=False)
    return {"prompt": prompt, "out": out, "early": early["field"], "final": load_field(out / "coarse" / "field.pt")}


def refine_run(run: Path, iters: int = REFINE_ITERS) -> dict:
    """A refine run of RUN; returns the albedo renders' colour after step 1 and at the end."""
    from meshdream.stages.refine import refine

    first = {}

    def keep_first(stage, done):
        if stage == "refine" and done == 1:
            first["state"] = load_checkpoint(run / "refine" / "checkpoint.pt")

    with step_hook(keep_first):
        refine(run, overrides=dict(REFINE, iters=iters), progress=False)
    return {"first": mesh_colour(first["state"]), "final": mesh_colour(load_checkpoint(run / "refine" / "checkpoint.pt"))}


# ------------------------------------------------------------------------------------ measurements

def views(elevation: float, n: int = 4):
    return turntable_cameras(n, elevation_deg=elevation, distance=2.5)


@torch.no_grad()
def field_colour(field) -> torch.Tensor:
    """Mean albedo [3] of the opaque pixels of 4 views from 45 degrees up."""
    images, out = render_cameras(field, views(45.0), 32, num_samples=32, bound=1.0, shading="albedo",
                                 background=torch.ones(3), with_normals=False)
    opaque = out.opacity.view(-1, 32, 32) > 0.5
    assert opaque.sum() > 50, "the field vanished"
    return images.permute(0, 2, 3, 1)[opaque].mean(0)


@torch.no_grad()
def mesh_colour(state: dict) -> torch.Tensor:
    """Mean albedo [3] of the covered pixels of 4 views of a refine checkpoint's textured mesh."""
    import meshdream.raster as dr
    from meshdream.render.mesh_render import render_mesh

    mesh = state["mesh"]
    verts = (mesh["base"] + state["offsets"])[mesh["vmapping"]]
    images, cover = render_mesh(dr.get_context("cpu"), verts, mesh["faces"], mesh["uvs"], torch.sigmoid(state["texture_logits"]),
                                views(45.0), 32, "albedo")
    covered = cover[:, 0] > 0.5
    return images.permute(0, 2, 3, 1)[covered].mean(0)


def hue(colour: torch.Tensor) -> tuple[str, float]:
    """(the prior colour whose hue is nearest, the colour's chroma): the direction of colour - grey, compared
    with each prior colour's."""
    chroma = colour - colour.mean()
    cosines = {name: float(torch.nn.functional.cosine_similarity(chroma, torch.tensor(c) - sum(c) / 3, dim=0))
               for name, c in COLOURS.items()}
    return max(cosines, key=cosines.get), float(chroma.norm())


def towards(colour: torch.Tensor, name: str) -> float:
    """How far ``colour``'s chroma reaches in the direction of the prior colour ``name``'s chroma."""
    target = torch.tensor(COLOURS[name])
    direction = (target - target.mean()) / (target - target.mean()).norm()
    return float(((colour - colour.mean()) * direction).sum())


@torch.no_grad()
def taper(field) -> float:
    """Silhouette statistic from 4 side views: opaque pixels in the top third of the object's rows over those
    in the bottom third (about 1 for a cube or a sphere, well below 1 for a cone)."""
    _, out = render_cameras(field, views(0.0), 32, num_samples=32, bound=1.0, shading="albedo", background=torch.ones(3),
                            with_normals=False)
    ratios = []
    for rows in (out.opacity.view(-1, 32, 32) > 0.5).float().sum(2):  # [H] opaque pixels per row, row 0 = top
        filled = rows.nonzero().flatten()
        top, bottom = int(filled[0]), int(filled[-1]) + 1
        third = max(1, (bottom - top) // 3)
        ratios.append(float(rows[top:top + third].sum() / rows[bottom - third:bottom].sum()))
    return sum(ratios) / len(ratios)


@torch.no_grad()
def prompt_loss(field, prompt: str, guide) -> float:
    """The prior's denoising error on lit renders of 4 views from 45 degrees, for the prompt's view-dependent
    embeddings, at fixed timesteps and fixed noise: mean |eps_theta(x_t, prompt) - eps|^2."""
    cams = views(45.0)
    images, _ = render_cameras(field, cams, guide.resolution, num_samples=32, bound=1.0, shading="lambertian",
                               background=torch.ones(3), with_normals=False)
    x = images * 2 - 1
    cond, _ = guide.encode_prompt(prompt).select(cams.azimuth, cams.elevation)
    g = torch.Generator().manual_seed(0)
    losses = []
    for t in (200, 400, 600):
        steps = torch.full((len(cams),), t)
        noise = torch.randn(x.shape, generator=g)
        a = guide.alphas_cumprod[steps].view(-1, 1, 1, 1)
        eps = guide.predict_eps(a.sqrt() * x + (1 - a).sqrt() * noise, steps, cond)
        losses.append(float(((eps - noise) ** 2).mean()))
    return sum(losses) / len(losses)


# ------------------------------------------------------------------------------------------ tests

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    return {p: coarse_run(p, root / p.replace(" ", "_")) for p in ("a red cube", "a blue cube", "a red cone")}


@pytest.fixture(scope="module")
def guide():
    from meshdream.guidance import load_guidance

    return load_guidance("embedded")


def test_coarse_colour_follows_the_prompt(runs):
    """Same seed, same start; only the colour word differs, and so does the colour the field learns: the hue
    of its change from the early field is the asked one (the start's own tint is not the prompt's doing), and
    each run is further towards its own colour than the other run is."""
    seen = {p: field_colour(runs[p]["final"]) for p in ("a red cube", "a blue cube")}
    for prompt, colour in seen.items():
        name, chroma = hue(colour - field_colour(runs[prompt]["early"]))
        assert name == prompt.split()[1] and chroma > 0.03, (prompt, colour.tolist(), name, chroma)
    assert towards(seen["a red cube"], "red") - towards(seen["a blue cube"], "red") > 0.1, seen
    assert towards(seen["a blue cube"], "blue") - towards(seen["a red cube"], "blue") > 0.1, seen


def test_coarse_shape_follows_the_prompt(runs):
    """Only the shape word differs: the cone's silhouette narrows towards the top, the cube's does not."""
    cone, cube = taper(runs["a red cone"]["final"]), taper(runs["a red cube"]["final"])
    assert cone < 0.9 and cube - cone > 0.1, (cone, cube)
    assert hue(field_colour(runs["a red cone"]["final"]))[0] == "red"


def test_coarse_prompt_loss_falls(runs, guide):
    for prompt, run in runs.items():
        before, after = prompt_loss(run["early"], prompt, guide), prompt_loss(run["final"], prompt, guide)
        assert after < 0.85 * before, (prompt, before, after)


def test_refine_moves_the_texture_towards_the_prompted_colour(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["a red cube"]["out"], run)
    colours = refine_run(run)
    assert hue(colours["final"])[0] == "red"
    assert towards(colours["final"], "red") - towards(colours["first"], "red") > 0.03, {k: v.tolist() for k, v in colours.items()}
