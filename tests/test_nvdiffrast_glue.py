"""The CUDA path's glue, checked on the CPU against nvdiffrast's real Python API (the diffrp-nvdiffrast
package; its CUDA plugin is built only on first use, which these tests never reach): our calls match its
signatures and defaults, and a whole refine + export runs through NvdiffrastBackend with nvdiffrast's ops
served by our CPU kernels (tests/nvdiffrast_double.py)."""
import inspect
import shutil

import numpy as np
import pytest
import torch
import trimesh

import nvdiffrast.torch as nvdr  # the test extra installs diffrp-nvdiffrast (setup.py)

import meshdream.raster as dr
from nvdiffrast_double import barycentric_derivatives, install, mip_stack
from test_export import gltf_validator  # noqa: F401  (the Khronos validator fixture)

OPS = ("rasterize", "interpolate", "texture", "antialias")


def _params(fn) -> list:
    """(name, default) of the positional-or-keyword parameters; nvdiffrast's glctx is our ctx."""
    return [("ctx" if n == "glctx" else n, p.default) for n, p in inspect.signature(fn).parameters.items()
            if p.kind is p.POSITIONAL_OR_KEYWORD]


def test_our_api_has_nvdiffrasts_signatures_and_defaults():
    """meshdream.raster's four functions take nvdiffrast's parameters, in its order, with its defaults (plus
    the keyword-only ctx), and the backend forwards every parameter by its nvdiffrast name."""
    for name in OPS:
        assert _params(getattr(dr, name)) == _params(getattr(nvdr, name)), name
    assert list(inspect.signature(nvdr.RasterizeCudaContext).parameters) == ["device"]
    # the backend's methods: same names as RasterBackend's, which are nvdiffrast's minus the context/default plumbing
    for name in OPS:
        ours = list(inspect.signature(getattr(dr.NvdiffrastBackend, name)).parameters)[1:]
        theirs = list(inspect.signature(getattr(nvdr, name)).parameters)
        assert ours == ["native" if p == "glctx" else p for p in theirs], name


def test_every_call_binds_to_nvdiffrast_with_its_defaults(monkeypatch):
    """Calls through meshdream.raster with nothing but the required arguments reach nvdiffrast with exactly
    nvdiffrast's defaults (the double binds each call to the real signature and records it)."""
    double = install(monkeypatch)
    ctx = dr.get_context("cpu", "nvdiffrast")
    assert isinstance(ctx.native, nvdr.RasterizeCudaContext) and ctx.native.device == torch.device("cpu")
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, rast_db = dr.rasterize(ctx, pos, tri, (8, 8))
    uv, _ = dr.interpolate(torch.rand(3, 2), rast, tri, ctx=ctx)
    colour = dr.texture(torch.rand(1, 4, 4, 3), uv.contiguous(), filter_mode="linear", ctx=ctx)
    dr.antialias(colour, rast, pos, tri, ctx=ctx)
    names = [name for name, _ in double.calls]
    assert names == list(OPS)
    args = dict(double.calls)
    assert args["rasterize"]["resolution"] == [8, 8] and args["rasterize"]["ranges"] is None and args["rasterize"]["grad_db"] is True
    assert args["interpolate"]["rast_db"] is None and args["interpolate"]["diff_attrs"] is None
    assert (args["texture"]["boundary_mode"], args["texture"]["max_mip_level"], args["texture"]["uv_da"]) == ("wrap", None, None)
    assert args["antialias"]["topology_hash"] is None and args["antialias"]["pos_gradient_boost"] == 1.0
    # what nvdiffrast's C++ side refuses, the double refuses too: float64 positions, int64 triangles
    with pytest.raises(RuntimeError, match="float32"):
        dr.rasterize(ctx, pos.double(), tri, (8, 8))
    with pytest.raises(RuntimeError, match="int32"):
        dr.rasterize(ctx, pos, tri.long(), (8, 8))


def test_barycentric_derivatives_match_finite_differences():
    """The double's rast_db (nvdiffrast's definition: du/dX, du/dY, dv/dX, dv/dY per pixel) against the
    barycentrics of a rasterisation shifted by a fraction of a pixel."""
    pos = torch.tensor([[[-0.7, -0.6, 0.1, 1.0], [1.2, -0.9, 0.3, 2.0], [0.1, 1.1, 0.2, 1.5]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    H = W = 32
    rast = dr.rasterize(dr.get_context("cpu"), pos, tri, (H, W))[0]
    db = barycentric_derivatives(pos, tri, rast)
    h = 0.01  # pixels: moving the triangle by -h pixels in x samples it at +h
    for axis, size, cols in ((0, W, (0, 2)), (1, H, (1, 3))):
        shifted = pos.clone()
        shifted[..., axis] -= 2 * h / size * shifted[..., 3]
        r2 = dr.rasterize(dr.get_context("cpu"), shifted, tri, (H, W))[0]
        both = (rast[..., 3] > 0) & (r2[..., 3] > 0)
        fd = (r2[..., :2] - rast[..., :2])[both] / h
        assert torch.allclose(db[..., list(cols)][both], fd, atol=2e-3, rtol=1e-2)


def test_mip_stack_is_a_box_filter():
    tex = torch.arange(16.0).view(1, 4, 4, 1)
    levels = mip_stack(tex, None)
    assert [tuple(t.shape[1:3]) for t in levels] == [(4, 4), (2, 2), (1, 1)]
    assert levels[1][0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4 and levels[2].item() == tex.mean()


def _sphere(device="cpu"):
    from meshdream.mesh.uv import unwrap

    m = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    uv = unwrap(np.asarray(m.vertices, np.float32), np.asarray(m.faces), resolution=64)
    v = torch.tensor(np.asarray(m.vertices, np.float32)[uv.vmapping])
    return v, torch.tensor(uv.faces.astype(np.int64)), torch.tensor(uv.uvs)


def test_mesh_render_takes_the_mipmapped_path_and_agrees_with_the_cpu_where_no_mip_is_needed(monkeypatch):
    """render_mesh on an nvdiffrast context asks for uv derivatives and trilinear mipmaps; with a texture no
    finer than the screen (mip level 0) it renders what the CPU backend renders, and a 256 px texture seen at
    24 px is filtered (closer to the texture's mean than the CPU's bilinear lookup)."""
    from meshdream.render.cameras import turntable_cameras
    from meshdream.render.mesh_render import render_mesh

    double = install(monkeypatch)
    nv, cpu = dr.get_context("cpu", "nvdiffrast"), dr.get_context("cpu")
    v, f, uvs = _sphere()
    cams = turntable_cameras(2)
    tex = torch.rand(8, 8, 3, requires_grad=True)
    a, alpha_a = render_mesh(nv, v, f, uvs, tex, cams, 64, "lambertian")
    b, alpha_b = render_mesh(cpu, v, f, uvs, tex, cams, 64, "lambertian")
    calls = {name: args for name, args in double.calls}
    assert calls["texture"]["filter_mode"] == "linear-mipmap-linear" and calls["texture"]["uv_da"].shape == (2, 64, 64, 4)
    assert any(args["diff_attrs"] == "all" and args["rast_db"] is not None for name, args in double.calls if name == "interpolate")
    assert torch.equal(alpha_a, alpha_b)
    # the same image but for the few grazing-angle pixels whose footprint exceeds a texel (mip level > 0:
    # 0.4 % here) and their antialiased neighbours
    differ = (a - b).abs().amax(1) > 1e-5
    assert differ.sum() < 0.02 * (alpha_b > 0).sum() and (a - b).abs().mean() < 1e-4
    a.sum().backward()
    assert torch.isfinite(tex.grad).all() and tex.grad.abs().sum() > 0
    fine = torch.rand(256, 256, 3)
    a, _ = render_mesh(nv, v, f, uvs, fine, cams, 24, "albedo")
    b, alpha = render_mesh(cpu, v, f, uvs, fine, cams, 24, "albedo")
    inside = (alpha > 0).expand_as(a)
    assert (a - 0.5)[inside].abs().mean() < 0.5 * (b - 0.5)[inside].abs().mean()


def test_refine_and_export_run_through_nvdiffrast_backend(monkeypatch, coarse_run, tiny_configs, tmp_path, gltf_validator):  # noqa: F811
    """A whole refine on NvdiffrastBackend (the default for the CPU device type swapped to it, as CUDA's is),
    every op through nvdiffrast.torch's public functions, then an export to a GLB the Khronos validator
    accepts."""
    from meshdream.stages.export import export
    from meshdream.stages.refine import refine

    double = install(monkeypatch)
    run = tmp_path / "run"
    shutil.copytree(coarse_run, run)
    with monkeypatch.context() as m:
        m.setitem(dr.DEFAULT_BACKENDS, "cpu", "nvdiffrast")
        out = refine(run, config=tiny_configs["refine"], progress=False, overrides=["preview_every=2"])
    names = [name for name, _ in double.calls]
    assert set(names) == set(OPS) and names.count("rasterize") >= 4  # the bake, 4 SDS steps, the previews
    assert any(args.get("filter_mode") == "linear-mipmap-linear" for name, args in double.calls if name == "texture")
    mesh = trimesh.load(out, process=False, force="mesh")
    assert len(mesh.faces) > 0 and (run / "refine" / "texture.png").is_file()
    glb = export(run, format="glb")
    report = gltf_validator(glb)
    assert report["numErrors"] == 0, report["messages"]
