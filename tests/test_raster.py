import pytest
import torch
from torch.autograd import gradcheck

import meshdream.raster as dr
from meshdream.engine.kernels import kernel
from meshdream.errors import MeshdreamError
from meshdream.raster import cpu, reference


def random_scene(B=2, V=60, F=24, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(B, V, 4, generator=g, dtype=dtype)
    pos[..., 3] = pos[..., 3].abs() + 1.5
    pos[..., 2] *= 0.3
    tri = torch.randint(0, V, (F, 3), generator=g, dtype=torch.int32)
    return pos, tri


CPU = dr.get_context("cpu")


def test_known_triangle_covers_known_pixels():
    """A right triangle over the lower-left half of the image, vertex 0 at the bottom-left corner."""
    pos = torch.tensor([[[-1.0, -1.0, 0.5, 1.0], [1.0, -1.0, 0.5, 1.0], [-1.0, 1.0, 0.5, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, db = dr.rasterize(CPU, pos, tri, (4, 4))
    covered = rast[0, ..., 3] > 0
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    assert torch.equal(covered, (xs + ys) <= 3)  # row 0 is the bottom (y = -1); centres on an edge count as inside
    # pixel (0, 0) centre at ndc (-0.75, -0.75): barycentrics w.r.t. vertex 1 and 2 are 0.125 each
    u, v, zw, tid = rast[0, 0, 0]
    assert torch.allclose(torch.stack([u, v, zw, tid]), torch.tensor([0.75, 0.125, 0.5, 1.0]))
    assert db.shape == rast.shape


def test_depth_test_and_ties_are_deterministic():
    near = [[-1, -1, 0.1, 1], [1, -1, 0.1, 1], [0, 1, 0.1, 1]]
    far = [[-1, -1, 0.6, 1], [1, -1, 0.6, 1], [0, 1, 0.6, 1]]
    pos = torch.tensor([far + near + near], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=torch.int32)
    rast, _ = dr.rasterize(CPU, pos, tri, (8, 8))
    ids = rast[0, ..., 3][rast[0, ..., 3] > 0]
    assert (ids == 2).all()  # the near triangle wins; of two equal ones, the lower id


def test_behind_camera_and_clipped_depth_are_skipped():
    pos = torch.tensor([[[-1, -1, 0, -1.0], [1, -1, 0, 1], [0, 1, 0, 1], [-1, -1, 2, 1], [1, -1, 2, 1], [0, 1, 2, 1]]])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    rast, _ = dr.rasterize(CPU, pos, tri, (8, 8))
    assert (rast == 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_matches_reference(seed):
    pos, tri = random_scene(seed=seed, dtype=torch.float32)
    r_cpu, _ = dr.rasterize(CPU, pos, tri, (24, 32))
    r_ref, _ = dr.rasterize(dr.get_context("cpu", "reference"), pos, tri, (24, 32))
    assert torch.equal(r_cpu[..., 3], r_ref[..., 3])
    assert torch.allclose(r_cpu, r_ref, atol=1e-5)
    attr = torch.randn(2, pos.shape[1], 5)
    out, _ = dr.interpolate(attr, r_cpu, tri)
    assert torch.allclose(out, reference.interpolate(attr, r_ref, tri), atol=1e-5)
    # gradients to positions agree with autograd through the reference's closed form
    p1, p2 = pos.clone().double().requires_grad_(), pos.clone().double().requires_grad_()
    w = torch.randn(2, 24, 32, 2, dtype=torch.float64)
    (dr.rasterize(CPU, p1, tri, (24, 32))[0][..., :2] * w).sum().backward()
    (reference.rasterize(p2, tri, (24, 32))[..., :2] * w).sum().backward()
    assert torch.allclose(p1.grad, p2.grad, atol=1e-8)


@pytest.mark.parametrize("filter_mode", ["linear", "nearest"])
@pytest.mark.parametrize("boundary_mode", ["wrap", "clamp", "zero"])
def test_texture_matches_reference(filter_mode, boundary_mode):
    tex = torch.rand(1, 8, 6, 3)
    uv = torch.rand(2, 10, 12, 2) * 1.6 - 0.3
    out = dr.texture(tex, uv, filter_mode=filter_mode, boundary_mode=boundary_mode)
    assert torch.allclose(out, reference.texture(tex, uv, filter_mode, boundary_mode), atol=1e-6)


def test_texture_texel_centres():
    tex = torch.arange(4.0).view(1, 1, 4, 1)
    uv = torch.tensor([[[[0.125, 0.5], [0.375, 0.5], [0.25, 0.5]]]])
    out = dr.texture(tex, uv, filter_mode="linear", boundary_mode="clamp")
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 1.0, 0.5]))



def test_binned_bands_match_reference_on_a_tall_image():
    """The kernel bins triangles by 8-row bands: triangles spanning many bands, ones partly off screen and
    ones behind the camera (w <= 0) give the reference's coverage and ids on a 77 x 50 image."""
    pos, tri = random_scene(B=2, V=200, F=300, seed=3, dtype=torch.float32)
    pos[:, :40, 3] = -pos[:, :40, 3].abs()  # some vertices behind the camera
    pos[:, 40:80, :2] *= 4  # some triangles reach far outside the frame
    r_cpu, _ = dr.rasterize(CPU, pos, tri, (77, 50))
    r_ref, _ = dr.rasterize(dr.get_context("cpu", "reference"), pos, tri, (77, 50))
    assert (r_cpu[..., 3] > 0).float().mean() > 0.3  # a busy frame, not an empty one
    assert torch.equal(r_cpu[..., 3], r_ref[..., 3])
    assert torch.allclose(r_cpu, r_ref, atol=1e-5)

def test_float_kernel_sign_exit_equals_the_division():
    """For float32 positions the kernel rejects a pixel by the signs of its barycentric numerators before
    dividing (speed); the float64 kernel divides as before. Same double arithmetic otherwise, so both give
    the same ids and the same values (cast to float32), here on triangles with vertices on pixel centres
    (numerators exactly 0 on their edges), both windings, off-screen and behind-camera vertices."""
    g = torch.Generator().manual_seed(5)
    xs = (torch.arange(12, dtype=torch.float64) + 0.5) / 12 * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    grid_pos = torch.cat([grid, torch.full((len(grid), 1), 0.3), torch.ones(len(grid), 1)], -1)
    tri = torch.randint(0, len(grid), (150, 3), generator=g, dtype=torch.int32)
    tri = torch.cat([tri, tri.flip(1)])  # both windings: sums of either sign
    rand_pos, rand_tri = random_scene(B=2, V=200, F=300, seed=7, dtype=torch.float64)
    rand_pos[:, :30, 3] = -rand_pos[:, :30, 3]
    rand_pos[:, 30:60, :2] *= 4
    for pos, t, size in ((grid_pos[None].float(), tri, (12, 12)), (rand_pos.float(), rand_tri, (45, 38))):
        r32 = torch.from_numpy(kernel("rasterize_fwd", torch.float32)(pos.numpy(), t.numpy(), *size))
        r64 = torch.from_numpy(kernel("rasterize_fwd", torch.float64)(pos.double().numpy(), t.numpy(), *size))
        assert (r32[..., 3] > 0).any()
        assert torch.equal(r32, r64.float())


def test_gradcheck_rasterize():
    pos, tri = random_scene(B=1, V=12, F=5)
    p = pos.clone().requires_grad_()
    assert gradcheck(lambda p: dr.rasterize(CPU, p, tri, (12, 12))[0][..., :2], (p,), eps=1e-7, atol=1e-5)


def test_gradcheck_interpolate():
    pos, tri = random_scene(B=2, V=30, F=12)
    rast, _ = dr.rasterize(CPU, pos, tri, (12, 12))
    attr = torch.randn(2, 30, 3, dtype=torch.float64, requires_grad=True)
    uv = rast[..., :2].clone().requires_grad_()
    assert gradcheck(lambda a, u: cpu.interpolate(a, torch.cat([u, rast[..., 2:]], -1), tri), (attr, uv), eps=1e-6, atol=1e-5)
    shared = torch.randn(30, 3, dtype=torch.float64, requires_grad=True)  # [V, C] broadcast over the batch
    assert gradcheck(lambda a: dr.interpolate(a, rast, tri)[0], (shared,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("boundary_mode", ["wrap", "clamp", "zero"])
def test_gradcheck_texture(boundary_mode):
    tex = torch.rand(1, 5, 7, 2, dtype=torch.float64, requires_grad=True)
    uv = (torch.rand(2, 4, 4, 2, dtype=torch.float64) * 1.2 - 0.1).requires_grad_()
    assert gradcheck(lambda t, u: cpu.texture(t, u, "linear", boundary_mode), (tex, uv), eps=1e-7, atol=1e-5)


def test_gradcheck_antialias_and_it_blends_silhouettes():
    pos = torch.tensor([[[-0.7, -0.6, 0.1, 1.0], [0.65, -0.5, 0.2, 1.0], [-0.1, 0.7, 0.3, 1.0]]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, _ = dr.rasterize(CPU, pos, tri, (12, 12))
    color = torch.where(rast[..., 3:] > 0, torch.ones(1, 12, 12, 3, dtype=torch.float64), torch.zeros(1, 12, 12, 3, dtype=torch.float64))
    out = dr.antialias(color, rast, pos, tri)
    edge = (out > 0) & (out < 1)
    assert edge.any() and ((out - color).abs() > 0).sum() > 10  # silhouette pixels get fractional coverage
    assert gradcheck(lambda c, p: dr.antialias(c, rast, p, tri), (color.clone().requires_grad_(), pos.clone().requires_grad_()),
                     eps=1e-7, atol=1e-5)


def test_antialias_ignores_interior_edges():
    """Two triangles forming a quad: their shared edge is not a silhouette."""
    pos = torch.tensor([[[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0.5, 0.5, 0, 1], [-0.5, 0.5, 0, 1]]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    rast, _ = dr.rasterize(CPU, pos, tri, (16, 16))
    color = torch.where(rast[..., 3:] > 0, torch.full((1, 16, 16, 1), 1.0, dtype=torch.float64), torch.zeros(1, 16, 16, 1, dtype=torch.float64))
    out = dr.antialias(color, rast, pos, tri)
    inside = (rast[0, 4:12, 4:12, 3] > 0)
    assert inside.all() and torch.equal(out[0, 5:11, 5:11], color[0, 5:11, 5:11])


def test_antialias_reads_ids_like_the_raster_does():
    """antialias reads each pixel's triangle id once (speed) through the same rounding and range check: ids
    near an integer round to it, ids outside [1, F] are background, in the forward and the backward pass."""
    pos, tri = random_scene(B=2, V=60, F=40, seed=11)
    rast, _ = dr.rasterize(CPU, pos, tri, (20, 24))
    color = torch.rand(2, 20, 24, 3, dtype=torch.float64)
    odd = rast.clone()
    covered = odd[..., 3] > 0
    odd[..., 3] = torch.where(covered, odd[..., 3] + 0.3, odd[..., 3])  # rounds back to the same id
    odd[0, :3, :, 3] = 41.0  # beyond F: background
    odd[1, :, :2, 3] = -2.0  # negative: background
    bg = rast.clone()
    bg[0, :3, :, 3] = 0
    bg[1, :, :2, 3] = 0
    assert covered[0, :3].any() or covered[1, :, :2].any()
    grad = torch.randn(2, 20, 24, 3, dtype=torch.float64)
    outs = []
    for r in (odd, bg):
        c, p = color.clone().requires_grad_(), pos.clone().requires_grad_()
        out = dr.antialias(c, r, p, tri)
        (out * grad).sum().backward()
        outs.append((out.detach(), c.grad, p.grad))
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_range_mode():
    pos, tri = random_scene(B=1, V=40, F=10, dtype=torch.float32)
    ranges = torch.tensor([[0, 4], [4, 6]])
    rast, _ = dr.rasterize(CPU, pos[0], tri, (16, 16), ranges=ranges)
    a, _ = dr.rasterize(CPU, pos, tri[:4], (16, 16))
    assert rast.shape[0] == 2 and torch.equal(rast[0], a[0])
    ids = rast[1, ..., 3][rast[1, ..., 3] > 0]
    assert ((ids >= 5) & (ids <= 10)).all()


def test_errors():
    pos, tri = random_scene(dtype=torch.float32)
    with pytest.raises(ValueError, match="tri must be"):
        dr.rasterize(CPU, pos, tri[:, :2], (8, 8))
    with pytest.raises(ValueError, match="outside"):
        dr.rasterize(CPU, pos, tri + 1000, (8, 8))
    # options passed by code: programming errors (ValueError), not user-input or run failures
    with pytest.raises(ValueError, match="mipmaps") as e:
        dr.texture(torch.rand(1, 4, 4, 3), torch.rand(1, 2, 2, 2), filter_mode="linear-mipmap-linear")
    assert not isinstance(e.value, MeshdreamError)
    with pytest.raises(ValueError, match="unknown rasteriser backend") as e:
        dr.get_context("cpu", "opengl")
    assert not isinstance(e.value, MeshdreamError)


class _SpyBackend(dr.RasterBackend):
    """A registered backend that records each op it serves and delegates to the C++ one."""

    def __init__(self):
        self.calls, self.inner = [], dr.BACKENDS["cpu"]

    def rasterize(self, *args):
        self.calls.append("rasterize")
        return self.inner.rasterize(*args)

    def interpolate(self, *args):
        self.calls.append("interpolate")
        return self.inner.interpolate(*args)

    def texture(self, *args):
        self.calls.append("texture")
        return self.inner.texture(*args)

    def antialias(self, *args):
        self.calls.append("antialias")
        return self.inner.antialias(*args)


def test_a_registered_backend_serves_every_op():
    from meshdream.render.cameras import make_cameras
    from meshdream.render.mesh_render import render_mesh

    spy = dr.register_backend("spy", _SpyBackend())
    try:
        ctx = dr.get_context("cpu", "spy")
        assert ctx.backend == "spy"
        v = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
        uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
        cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([60.0]))
        tex = torch.rand(4, 4, 3)
        img, _ = render_mesh(ctx, v, torch.tensor([[0, 1, 2]]), uvs, tex, cams, 16, "lambertian")
        assert spy.calls == ["rasterize", "interpolate", "texture", "interpolate", "antialias"]
        ref, _ = render_mesh(CPU, v, torch.tensor([[0, 1, 2]]), uvs, tex, cams, 16, "lambertian")
        assert torch.equal(img, ref)  # the spy delegates to the C++ backend
        # the default for a device type routes the ctx-less (nvdiffrast-style) calls
        dr.register_backend("spy", spy, default_for=("cpu",))
        spy.calls.clear()
        pos, tri = random_scene(dtype=torch.float32)
        rast, _ = dr.rasterize(dr.get_context("cpu"), pos, tri, (8, 8))
        dr.interpolate(torch.rand(1, pos.shape[1], 2), rast, tri)
        assert spy.calls == ["rasterize", "interpolate"]
    finally:
        dr.BACKENDS.pop("spy")
        dr.DEFAULT_BACKENDS["cpu"] = "cpu"


class _MipmapSpy(_SpyBackend):
    """Says it has mipmaps; records the texture filter it is asked for and filters linearly (the C++ backend)."""

    capabilities = dr.Capabilities(mipmaps=True, image_derivatives=True)

    def __init__(self):
        super().__init__()
        self.filters = []

    def texture(self, tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level):
        self.filters.append(filter_mode)
        return self.inner.texture(tex, uv, uv_da, mip_level_bias, mip, "linear", boundary_mode, max_mip_level)


def test_mesh_rendering_asks_the_backend_for_mipmaps_not_its_name():
    from meshdream.render.cameras import make_cameras
    from meshdream.render.mesh_render import render_mesh

    assert not dr.capabilities(CPU).mipmaps and dr.BACKENDS["nvdiffrast"].capabilities.mipmaps
    spy = dr.register_backend("mipmapping", _MipmapSpy())
    try:
        v = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
        uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
        cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([60.0]))
        render_mesh(dr.get_context("cpu", "mipmapping"), v, torch.tensor([[0, 1, 2]]), uvs, torch.rand(4, 4, 3), cams, 16)
        assert spy.filters == ["linear-mipmap-linear"]
    finally:
        dr.BACKENDS.pop("mipmapping")


def test_nvdiffrast_backend_implements_the_four_ops():
    for op in ("rasterize", "interpolate", "texture", "antialias"):
        assert getattr(dr.NvdiffrastBackend, op) is not getattr(dr.RasterBackend, op), op


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device with nvdiffrast")
def test_nvdiffrast_backend_matches_cpu():
    pos, tri = random_scene(dtype=torch.float32)
    ctx = dr.get_context("cuda")
    r_gpu, _ = dr.rasterize(ctx, pos.cuda(), tri.cuda(), (24, 32))
    r_cpu, _ = dr.rasterize(CPU, pos, tri, (24, 32))
    same = r_gpu[..., 3].cpu() == r_cpu[..., 3]
    assert same.float().mean() > 0.99


def _sphere_scene(resolution=128, device="cpu"):
    """A UV sphere seen by one camera: clip positions [1, V, 4], triangles [F, 3] int32, uvs [V, 2]."""
    import numpy as np
    import trimesh

    from meshdream.render.cameras import make_cameras

    m = trimesh.creation.uv_sphere(radius=0.7, count=[24, 24])
    v = torch.tensor(np.asarray(m.vertices), dtype=torch.float32)
    f = torch.tensor(np.asarray(m.faces), dtype=torch.int32)
    uv = (v[:, :2] / 1.4 + 0.5).clamp(0, 1)
    cams = make_cameras(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([2.5]), torch.tensor([45.0]))
    hom = torch.cat([v, torch.ones_like(v[:, :1])], -1)
    pos = torch.einsum("bij,vj->bvi", cams.mvp(), hom).contiguous()
    return pos.to(device), f.to(device), uv.to(device)


@pytest.mark.cuda
def test_nvdiffrast_matches_cpu_coverage_and_barycentrics():
    pos, tri, _ = _sphere_scene()
    r_cpu, _ = dr.rasterize(CPU, pos, tri, (128, 128))
    r_gpu, _ = dr.rasterize(dr.get_context("cuda"), pos.cuda(), tri.cuda(), (128, 128))
    r_gpu = r_gpu.cpu()
    cov_cpu, cov_gpu = r_cpu[..., 3] > 0, r_gpu[..., 3] > 0
    assert (cov_cpu != cov_gpu).float().mean() < 0.005  # edge pixels may fall either way
    same = cov_cpu & cov_gpu & (r_cpu[..., 3] == r_gpu[..., 3])
    assert same.sum() > 0.98 * (cov_cpu & cov_gpu).sum()
    assert torch.allclose(r_cpu[..., :3][same], r_gpu[..., :3][same], atol=2e-3)


@pytest.mark.cuda
def test_nvdiffrast_matches_cpu_gradients():
    """interpolate + texture + antialias: image and the gradients reaching pos and texture agree."""
    torch.manual_seed(0)
    pos, tri, uv = _sphere_scene(64)
    tex = torch.rand(1, 32, 32, 3)
    weight = torch.rand(1, 64, 64, 3)
    results = []
    for ctx, device in ((CPU, "cpu"), (dr.get_context("cuda"), "cuda")):
        p = pos.detach().to(device, copy=True).requires_grad_(True)  # a fresh leaf per backend
        t = tex.detach().to(device, copy=True).requires_grad_(True)
        rast, _ = dr.rasterize(ctx, p, tri.to(device), (64, 64))
        uvi, _ = dr.interpolate(uv.to(device)[None], rast, tri.to(device))
        colour = dr.texture(t, uvi, filter_mode="linear", boundary_mode="clamp")
        colour = dr.antialias(colour.contiguous(), rast, p, tri.to(device))
        (colour * weight.to(device)).sum().backward()
        results.append((colour.detach().cpu(), p.grad.cpu(), t.grad.cpu()))
    (img_c, gp_c, gt_c), (img_g, gp_g, gt_g) = results
    assert (img_c - img_g).abs().mean() < 5e-3
    cos = lambda a, b: float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))  # noqa: E731
    assert cos(gt_c, gt_g) > 0.99
    assert cos(gp_c, gp_g) > 0.9
    assert 0.8 < float(gp_g.norm() / gp_c.norm()) < 1.25


@pytest.mark.cuda
def test_mesh_render_uses_mipmaps_on_cuda():
    from meshdream.render.cameras import turntable_cameras
    from meshdream.render.mesh_render import render_mesh

    pos, tri, uv = _sphere_scene()
    import trimesh

    m = trimesh.creation.uv_sphere(radius=0.7, count=[24, 24])
    v = torch.tensor(m.vertices, dtype=torch.float32, device="cuda")
    tex = torch.rand(256, 256, 3, device="cuda", requires_grad=True)
    images, alpha = render_mesh(dr.get_context("cuda"), v, tri.cuda().long(), uv.cuda(), tex, turntable_cameras(2).to("cuda"), 32,
                                "lambertian")
    images.sum().backward()
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(tex.grad).all() and alpha.sum() > 0


def test_nvdiffrast_backend_forwards_every_op_to_nvdiffrast(monkeypatch):
    """Each of the four ops is the backend's own method and reaches nvdiffrast.torch's function of the same
    name (a recording stand-in for the module: this checks the forwarding, not nvdiffrast)."""
    import types

    calls = []

    def record(name):
        def op(*args, **kwargs):
            calls.append(name)
            return name

        return op

    fake = types.SimpleNamespace(**{name: record(name) for name in ("rasterize", "interpolate", "texture", "antialias")})
    monkeypatch.setattr(dr.NvdiffrastBackend, "_nvdr", staticmethod(lambda: fake))
    for name in ("rasterize", "interpolate", "texture", "antialias"):
        assert getattr(dr.NvdiffrastBackend, name) is not getattr(dr.RasterBackend, name), f"NvdiffrastBackend has no {name}"
    ctx = dr.RasterContext("nvdiffrast", torch.device("cpu"), native="native")
    t = torch.zeros(1, 2, 2, 4)
    assert dr.rasterize(ctx, t, t, (2, 2)) == "rasterize"
    assert dr.interpolate(t, t, t, ctx=ctx) == "interpolate"
    assert dr.texture(t, t, ctx=ctx) == "texture"
    assert dr.antialias(t, t, t, t, ctx=ctx) == "antialias"
    assert calls == ["rasterize", "interpolate", "texture", "antialias"]


def _aa_scene(seed=0):
    """The sphere scene with random colours (a textured look), rasterised on the CPU."""
    import numpy as np

    pos, tri, _ = _sphere_scene(64)
    rast, _ = dr.rasterize(CPU, pos, tri, (64, 64))
    colour = torch.from_numpy(np.random.default_rng(seed).random((1, 64, 64, 3), dtype=np.float32))
    return colour, rast, pos, tri


def test_antialias_follows_nvdiffrasts_rules():
    """Our antialias against nvdiffrast's kernel written out in NumPy (tests/nvdiffrast_antialias.py): the same
    pairs blended by the same amounts. The rule that used to differ (a pair was blended whenever the other pixel's
    triangle did not share the crossed edge) blended 660 interior pixels of this sphere, where adjacent pixel
    centres land on triangles with no common edge; nvdiffrast's wing test blends silhouettes only."""
    import numpy as np

    from nvdiffrast_antialias import antialias_reference

    colour, rast, pos, tri = _aa_scene()
    ours = dr.antialias(colour, rast, pos, tri).numpy()
    ref = antialias_reference(colour.numpy(), rast.numpy(), pos.numpy(), tri.numpy())
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.cuda
def test_nvdiffrast_antialias_matches_its_numpy_port():
    """The NumPy port the CPU test checks ours against is nvdiffrast's kernel: same image on the GPU."""
    import numpy as np

    from nvdiffrast_antialias import antialias_reference

    colour, rast, pos, tri = _aa_scene()
    ctx = dr.get_context("cuda")
    r_gpu, _ = dr.rasterize(ctx, pos.cuda(), tri.cuda(), (64, 64))
    same = (r_gpu[..., 3].cpu() == rast[..., 3]).float().mean()
    out = dr.antialias(colour.cuda(), r_gpu, pos.cuda(), tri.cuda(), ctx=ctx).cpu().numpy()
    ref = antialias_reference(colour.numpy(), r_gpu.cpu().numpy(), pos.numpy(), tri.numpy())
    assert same > 0.99 and np.abs(out - ref).max() < 1e-4


# --- antialias values against nvdiffrast's algorithm (tests/nvdiffrast_antialias.py, plain Python) ------------

def _nvdiffrast_scene(name):
    """pos [1, V, 4] (float64), tri [F, 3] of a small scene."""
    d = torch.float64
    if name == "right triangles":  # legs along the axes, hypotenuse at 45 degrees; all coordinates dyadic (exact)
        p = [[-0.53125, -0.46875, 0.5, 1], [0.34375, -0.46875, 0.5, 1], [-0.53125, 0.40625, 0.5, 1]]
        return torch.tensor([p], dtype=d), torch.tensor([[0, 1, 2]], dtype=torch.int32)
    if name == "nearer triangle over another":  # a silhouette against another surface, both ways round
        p = [[-0.53125, -0.46875, 0.5, 1], [0.34375, -0.46875, 0.5, 1], [-0.53125, 0.40625, 0.5, 1],
             [0.46875, 0.59375, 0.1, 1], [-0.40625, 0.59375, 0.1, 1], [0.46875, -0.28125, 0.1, 1]]
        return torch.tensor([p], dtype=d), torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    if name == "triangle":
        p = [[-0.7, -0.6, 0.1, 1.0], [0.65, -0.5, 0.2, 1.0], [-0.1, 0.7, 0.3, 1.0]]
        return torch.tensor([p], dtype=d), torch.tensor([[0, 1, 2]], dtype=torch.int32)
    if name == "quad":
        p = [[-0.52, -0.61, 0.1, 1], [0.43, -0.61, 0.1, 1], [0.43, 0.37, 0.1, 1], [-0.52, 0.37, 0.1, 1]]
        return torch.tensor([p], dtype=d), torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    if name == "cube":  # closed mesh in perspective: silhouettes where front faces fold into back faces
        import trimesh

        from meshdream.render.cameras import make_cameras

        box = trimesh.creation.box((0.9, 0.9, 0.9))
        cams = make_cameras(torch.tensor([30.0]), torch.tensor([25.0]), torch.tensor([2.5]), torch.tensor([45.0]))
        v = torch.tensor(box.vertices, dtype=d)
        pos = torch.einsum("bij,vj->bvi", cams.mvp().to(d), torch.cat([v, torch.ones(len(v), 1, dtype=d)], 1)).contiguous()
        return pos, torch.tensor(box.faces, dtype=torch.int32)
    raise KeyError(name)


def _antialias_both(name, size=16):
    from nvdiffrast_antialias import antialias_reference

    pos, tri = _nvdiffrast_scene(name)
    rast, _ = dr.rasterize(CPU, pos, tri, (size, size))
    color = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = torch.from_numpy(antialias_reference(color.numpy(), rast.numpy(), pos.numpy(), tri.numpy()))
    return color, dr.antialias(color, rast, pos, tri), theirs


@pytest.mark.parametrize("name", ["right triangles", "nearer triangle over another"])
def test_antialias_values_equal_nvdiffrasts_along_edges_both_define_alike(name):
    """Edges along the axes or at 45 degrees, silhouettes against the background and against another surface:
    along the edges (pixels more than 1.5 px from every vertex) the coverage, the pixel that takes the blend and
    its sign equal nvdiffrast's algorithm's, pixel by pixel."""
    color, ours, theirs = _antialias_both(name)
    pos, _ = _nvdiffrast_scene(name)
    screen = (pos[0, :, :2] / pos[0, :, 3:] * 0.5 + 0.5) * 16 - 0.5  # [V, 2] (x, y) in pixels
    ys, xs = torch.meshgrid(torch.arange(16.0, dtype=torch.float64), torch.arange(16.0, dtype=torch.float64), indexing="ij")
    centres = torch.stack([xs, ys], -1).view(-1, 1, 2)
    along_edges = ((centres - screen).norm(dim=-1).min(1).values > 1.5).view(1, 16, 16)
    changed = ((theirs - color).abs().amax(-1) > 1e-9) & along_edges
    assert changed.sum() >= 12  # the scene exercises the blending there
    assert torch.allclose(ours[along_edges], theirs[along_edges], atol=1e-12, rtol=0), float((ours - theirs).abs().max())


@pytest.mark.parametrize("name", ["triangle", "quad", "cube"])
def test_antialias_values_equal_nvdiffrasts(name):
    color, ours, theirs = _antialias_both(name)
    assert torch.allclose(ours, theirs, atol=1e-12, rtol=0), int(((ours - theirs).abs().amax(-1) > 1e-9).sum())
