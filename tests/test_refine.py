import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner

import meshdream.raster as dr
from meshdream.texture.bake import bake_texture, dilate
from meshdream.render.cameras import make_cameras
from meshdream.engine.checkpoint import load_checkpoint
from meshdream.cli import cli
from meshdream.config import load_config, to_dict
from meshdream.errors import UserInputError
from meshdream.render.mesh_render import render_mesh
from meshdream.stages.refine import RefineConfig, refine
from meshdream.mesh.losses import edges_of, face_pairs, laplacian_loss, normal_consistency_loss
from meshdream.engine.stage_loop import step_hook
from meshdream.mesh.uv import unwrap

CPU = dr.get_context("cpu")


def icosphere():
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    return np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64)


def test_default_config_matches_configs_yaml():
    assert to_dict(load_config(RefineConfig, "configs/refine.yaml")) == to_dict(RefineConfig())
    assert load_config(RefineConfig, "configs/refine-sd.yaml").resolution == 512


def test_unwrap_is_consistent():
    v, f = icosphere()
    uv = unwrap(v, f, resolution=128)
    assert uv.uvs.min() >= 0 and uv.uvs.max() <= 1
    assert len(uv.vmapping) == len(uv.uvs) and uv.faces.max() < len(uv.uvs)
    # the split mesh has the same geometry, face for face
    assert np.allclose(v[uv.vmapping][uv.faces], v[f], atol=1e-6) or np.allclose(
        np.sort(v[uv.vmapping][uv.faces].reshape(-1, 9), 0), np.sort(v[f].reshape(-1, 9), 0), atol=1e-6)
    a = uv.uvs[uv.faces]
    area = 0.5 * ((a[:, 1, 0] - a[:, 0, 0]) * (a[:, 2, 1] - a[:, 0, 1]) - (a[:, 2, 0] - a[:, 0, 0]) * (a[:, 1, 1] - a[:, 0, 1]))
    assert (np.abs(area) > 0).all()


def test_bake_reproduces_a_known_albedo_when_rendered():
    v, f = icosphere()
    uv = unwrap(v, f, resolution=128)
    pos = torch.from_numpy(v[uv.vmapping])
    faces, uvs = torch.from_numpy(uv.faces), torch.from_numpy(uv.uvs)

    def colour(x):  # albedo as a function of position
        return (x * 0.5 / 0.6 + 0.5).clamp(0, 1)

    tex = bake_texture(CPU, pos, faces, uvs, 128, colour)
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([10.0]), torch.tensor([2.5]), torch.tensor([40.0]))
    img, alpha = render_mesh(CPU, pos, faces, uvs, tex, cams, 48, "albedo")
    # the same render with the exact colours as a vertex attribute
    exact = torch.from_numpy(np.asarray(trimesh.Trimesh(v, f).vertices, np.float32))
    o, d = cams.rays(48, 48)
    mask = alpha[0, 0] > 0
    inner = mask & torch.nn.functional.max_pool2d((~mask).float()[None, None], 3, 1, 1)[0, 0].eq(0)
    # depth along the ray to the sphere surface, then the colour there
    b = (o[0] * d[0]).sum(-1)
    c = (o[0] ** 2).sum(-1) - 0.6 ** 2
    t = -b - torch.sqrt((b * b - c).clamp_min(0))
    expected = colour(o[0] + d[0] * t[..., None]).permute(2, 0, 1)
    assert (img[0][:, inner] - expected[:, inner]).abs().mean() < 0.03


def test_dilate_fills_the_gutter():
    tex = torch.zeros(8, 8, 3)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    tex[2:4, 2:4] = 1.0
    mask[2:4, 2:4] = True
    out = dilate(tex, mask, iterations=2)
    assert torch.allclose(out[1, 1], torch.ones(3)) and torch.allclose(out, torch.ones_like(out))


def test_render_mesh_pixels_and_gradients():
    quad_v = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]], requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tex = torch.zeros(2, 2, 3)
    tex[1, :, 0] = 1.0  # top row of texels (v ~ 0.75) red, bottom (v ~ 0.25) black
    tex.requires_grad_(True)
    cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([60.0]))
    img, alpha = render_mesh(CPU, quad_v, faces, uvs, tex, cams, 32, "albedo", background=(0.0, 0.0, 1.0))
    assert alpha[0, 0, 16, 16] == 1 and alpha[0, 0, 0, 0] == 0
    assert torch.allclose(img[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # background
    assert img[0, 0, 12, 16] > 0.7 and img[0, 0, 20, 16] < 0.3  # image row 0 is the top: red above, black below
    img[0, 0].sum().backward()
    assert tex.grad[1, :, 0].abs().sum() > 0 and quad_v.grad.abs().sum() > 0  # silhouettes move the vertices


def test_regularisers():
    v, f = icosphere()
    vt, ft = torch.from_numpy(v), torch.from_numpy(f)
    edges = torch.from_numpy(edges_of(f))
    pairs = torch.from_numpy(face_pairs(f))
    assert len(pairs) == len(edges)  # closed mesh: every edge has two faces
    smooth = laplacian_loss(torch.zeros_like(vt), edges)
    assert smooth == 0
    noisy = (torch.randn_like(vt) * 0.05).requires_grad_()
    lap = laplacian_loss(noisy, edges)
    nc_smooth = normal_consistency_loss(vt, ft, pairs)
    nc_noisy = normal_consistency_loss(vt + noisy, ft, pairs)
    assert lap > 0 and nc_noisy > nc_smooth
    (lap + nc_noisy).backward()
    assert noisy.grad.abs().sum() > 0
    flat = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    assert normal_consistency_loss(flat, torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.tensor([[0, 1]])) < 1e-6


def test_refine_end_to_end_and_outputs(coarse_run, tiny_configs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(coarse_run, run)
    out = refine(run, config=tiny_configs["refine"], progress=False)
    assert out == run / "refine" / "mesh.obj"
    mesh = trimesh.load(out, process=False, force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.uv.shape == (len(mesh.vertices), 2)
    assert mesh.visual.material.image.size == (32, 32)
    assert (run / "refine" / "texture.png").is_file() and (run / "refine" / "previews" / "final.png").is_file()


def test_refine_resume_is_exact(coarse_run, tiny_configs, tmp_path):
    import shutil

    for name in ("a", "b"):
        shutil.copytree(coarse_run, tmp_path / name)
    refine(tmp_path / "a", config=tiny_configs["refine"], progress=False)

    def die(stage: str, done: int) -> None:  # fault injection: the process "dies" after its 3rd step
        if stage == "refine" and done == 3:
            raise RuntimeError("killed")

    with step_hook(die), pytest.raises(RuntimeError, match="killed"):
        refine(tmp_path / "b", config=tiny_configs["refine"], progress=False)
    assert load_checkpoint(tmp_path / "b" / "refine" / "checkpoint.pt")["step"] == 2
    with pytest.raises(UserInputError, match="cannot change while resuming: seed: 0 -> 5; texture_size: 32 -> 64"):
        refine(tmp_path / "b", resume=True, seed=5, texture_size=64, progress=False)  # the same rule as the coarse stage
    refine(tmp_path / "b", resume=True, seed=0, progress=False)
    a = load_checkpoint(tmp_path / "a" / "refine" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "refine" / "checkpoint.pt")
    assert torch.equal(a["offsets"], b["offsets"]) and torch.equal(a["texture_logits"], b["texture_logits"])


def test_run_without_coarse_result(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserInputError, match="no coarse result"):
        refine(tmp_path / "run", progress=False)
    r = CliRunner().invoke(cli, ["refine", str(tmp_path / "run")])
    assert r.exit_code == 2 and "no coarse result" in r.output
    r = CliRunner().invoke(cli, ["refine", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_negative_prompt_is_the_unconditional_context_of_both_stages(tmp_path, tiny_configs, tiny_prior, monkeypatch):
    """`coarse --negative-prompt` reaches the unconditional half of every SDS call; refine keeps the coarse
    stage's negative prompt unless given another. The contexts are compared with the folder's text encoder
    called here."""
    from test_guidance import _text_states

    from meshdream.guidance.pixel import PixelGuidance
    from meshdream.stages.coarse import coarse

    seen, real = [], PixelGuidance.sds_loss

    def recording(self, images, embeddings, *args, **kwargs):
        seen.append(embeddings.uncond)
        return real(self, images, embeddings, *args, **kwargs)

    monkeypatch.setattr(PixelGuidance, "sds_loss", recording)
    run = tmp_path / "run"
    coarse("a red cube", run, config=tiny_configs["coarse"], negative_prompt="blue sphere", progress=False, overrides={"iters": 2})
    refine(run, config=tiny_configs["refine"], progress=False, overrides={"iters": 1})
    blue, green = _text_states(tiny_prior, ["blue sphere"]), _text_states(tiny_prior, ["green torus"])
    assert len(seen) == 3 and all(torch.allclose(u, blue, atol=1e-6) for u in seen)
    refine(run, config=tiny_configs["refine"], progress=False, overrides={"iters": 1}, negative_prompt="green torus")
    assert len(seen) == 4 and torch.allclose(seen[-1], green, atol=1e-6)
