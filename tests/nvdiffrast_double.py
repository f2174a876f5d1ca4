"""A test double for nvdiffrast's CUDA plugin, installed behind nvdiffrast.torch's public API on a machine
without a GPU (tests only; never a backend).

``install(monkeypatch)`` replaces ``nvdiffrast.torch.RasterizeCudaContext``, ``rasterize``, ``interpolate``,
``texture`` and ``antialias`` with functions that

- bind every call against the real function's signature (``inspect.signature(real).bind``: unknown keywords,
  missing arguments and the defaults are nvdiffrast's own), and
- apply the checks nvdiffrast's C++ side makes (torch_*.cpp: NVDR_CHECK_F32 / _I32 / _CONTIGUOUS and the
  shape checks), so a call the CUDA plugin would refuse fails here too,

then serve the op with our C++ kernels (``meshdream.raster.cpu``). What the CPU backend lacks and the CUDA path
uses is computed here in PyTorch, after nvdiffrast's documented definitions: ``rast_db`` (the barycentrics'
pixel-space derivatives (du/dX, du/dY, dv/dX, dv/dY), analytic, without gradient), ``diff_attrs`` (the
attributes' pixel-space derivatives, differentiable) and trilinear mipmapping (``linear-mipmap-linear``: a
2x2 box-filtered mip stack, level 0.5 * log2 of the footprint's major axis squared, as common/texture.cu's
calculateMipLevel, each level sampled by our C++ bilinear kernel). Every call is recorded in ``calls``.
"""
from __future__ import annotations

import inspect
import nvdiffrast.torch as nvdr
import torch
import torch.nn.functional as F

import meshdream.raster as dr

OPS = ("rasterize", "interpolate", "texture", "antialias")
# the real signatures, read before anything is patched
SIGNATURES = {name: inspect.signature(getattr(nvdr, name)) for name in OPS}
CONTEXT_SIGNATURE = inspect.signature(nvdr.RasterizeCudaContext.__init__)


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise RuntimeError(message)  # nvdiffrast's NVDR_CHECK raises a RuntimeError (c10::Error) too


def _f32(name: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        _need(t.dtype == torch.float32, f"{name}: tensor must be float32, got {t.dtype}")


def _i32(name: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        _need(t.dtype == torch.int32, f"{name}: tensor must be int32, got {t.dtype}")


def _contiguous(name: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        _need(t.is_contiguous(), f"{name}: tensor must be contiguous")


class CpuRasterizeContext:
    """Stands in for RasterizeCudaContext(device=None)."""

    def __init__(self, *args, **kwargs):
        bound = CONTEXT_SIGNATURE.bind(self, *args, **kwargs)
        bound.apply_defaults()
        self.device = bound.arguments["device"]
        self.output_db = True
        self.active_depth_peeler = None


class Double:
    """The four ops and the context class, with a record of the calls (name, bound arguments)."""

    def __init__(self):
        self.signatures = SIGNATURES
        self.calls: list[tuple[str, dict]] = []

    def _bind(self, name: str, args, kwargs) -> dict:
        bound = self.signatures[name].bind(*args, **kwargs)  # TypeError for a call nvdiffrast would refuse
        bound.apply_defaults()
        self.calls.append((name, dict(bound.arguments)))
        return bound.arguments

    # ---- rasterize ----------------------------------------------------------------------------------------
    def rasterize(self, *args, **kwargs):
        a = self._bind("rasterize", args, kwargs)
        glctx, pos, tri, resolution, ranges, grad_db = (a[k] for k in ("glctx", "pos", "tri", "resolution", "ranges", "grad_db"))
        _need(isinstance(glctx, CpuRasterizeContext), f"glctx must be a RasterizeCudaContext, got {type(glctx).__name__}")
        _need(grad_db is True or grad_db is False, "grad_db must be a bool")
        resolution = tuple(resolution)
        _need(len(resolution) == 2 and all(isinstance(r, int) for r in resolution), f"resolution must be 2 ints, got {resolution}")
        _contiguous("rasterize", pos, tri)
        _f32("rasterize pos", pos)
        _i32("rasterize tri", tri)
        if ranges is None:
            _need(pos.ndim == 3 and pos.shape[0] > 0 and pos.shape[1] > 0 and pos.shape[2] == 4,
                  "instance mode - pos must have shape [>0, >0, 4]")
        else:
            _need(ranges.device.type == "cpu" and ranges.dtype == torch.int32, "ranges must be an int32 CPU tensor")
            _need(pos.ndim == 2 and pos.shape[1] == 4, "range mode - pos must have shape [>0, 4]")
        _need(tri.ndim == 2 and tri.shape[0] > 0 and tri.shape[1] == 3, "tri must have shape [>0, 3]")
        rast, _ = dr.BACKENDS["cpu"].rasterize(None, pos, tri, resolution, ranges, grad_db)
        pos_b = pos if ranges is None else pos.unsqueeze(0).expand(rast.shape[0], -1, -1)
        return rast, barycentric_derivatives(pos_b.detach(), tri, rast.detach())

    # ---- interpolate --------------------------------------------------------------------------------------
    def interpolate(self, *args, **kwargs):
        a = self._bind("interpolate", args, kwargs)
        attr, rast, tri, rast_db, diff_attrs = (a[k] for k in ("attr", "rast", "tri", "rast_db", "diff_attrs"))
        _contiguous("interpolate", attr, rast, tri)
        _f32("interpolate", attr, rast)
        _i32("interpolate tri", tri)
        _need(rast.ndim == 4 and rast.shape[-1] == 4, "rast must have shape[>0, >0, >0, 4]")
        _need(attr.ndim in (2, 3) and (attr.ndim == 2 or attr.shape[0] in (1, rast.shape[0])),
              "attr must have shape [>0, >0] or [1 or minibatch, >0, >0]")
        out, _ = dr.BACKENDS["cpu"].interpolate(attr, rast, tri, None, None)
        if diff_attrs is None:
            return out, torch.zeros(0, dtype=out.dtype)  # nvdiffrast returns an empty out_da then
        _need(rast_db is not None, "diff_attrs needs rast_db")
        _contiguous("interpolate", rast_db)
        _f32("interpolate rast_db", rast_db)
        _need(rast_db.shape == rast.shape, "rast_db must have the shape of rast")
        a3 = attr.unsqueeze(0) if attr.ndim == 2 else attr
        idx = list(range(a3.shape[-1])) if diff_attrs == "all" else [int(i) for i in diff_attrs]
        return out, attribute_derivatives(a3[..., idx], rast, rast_db, tri)

    # ---- texture ------------------------------------------------------------------------------------------
    def texture(self, *args, **kwargs):
        a = self._bind("texture", args, kwargs)
        tex, uv, uv_da, bias, mip, filter_mode, boundary_mode, max_mip_level = (
            a[k] for k in ("tex", "uv", "uv_da", "mip_level_bias", "mip", "filter_mode", "boundary_mode", "max_mip_level"))
        if filter_mode == "auto":  # nvdiffrast: mipmapping when derivatives or a bias are given
            filter_mode = "linear-mipmap-linear" if (uv_da is not None or bias is not None) else "linear"
        _need(filter_mode in ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear"),
              f"filter_mode {filter_mode!r} unsupported")
        _need(boundary_mode in ("wrap", "clamp", "zero", "cube"), f"boundary_mode {boundary_mode!r} unsupported")
        _need(boundary_mode != "cube", "the double has no cube maps (meshdream uses none)")
        _contiguous("texture", tex, uv)
        _f32("texture", tex, uv)
        _need(tex.ndim == 4 and uv.ndim == 4 and uv.shape[-1] == 2, "tex must be [>0, >0, >0, >0] and uv [>0, >0, >0, 2]")
        _need(tex.shape[0] in (1, uv.shape[0]), "tex minibatch must be 1 or uv's")
        _need(mip is None and bias is None, "the double takes mip levels from uv_da only (meshdream passes no mip or bias)")
        if filter_mode in ("nearest", "linear"):
            return dr.BACKENDS["cpu"].texture(tex, uv, None, None, None, filter_mode, boundary_mode, None)
        _need(uv_da is not None, "mipmapping filter mode requires uv_da and/or mip_level_bias input")
        _contiguous("texture uv_da", uv_da)
        _f32("texture uv_da", uv_da)
        _need(uv_da.shape == (*uv.shape[:-1], 4), "uv_da must have shape [minibatch_size, height, width, 4]")
        return mipmapped_texture(tex, uv, uv_da, filter_mode, boundary_mode, max_mip_level)

    # ---- antialias ----------------------------------------------------------------------------------------
    def antialias(self, *args, **kwargs):
        a = self._bind("antialias", args, kwargs)
        color, rast, pos, tri, topology_hash, boost = (a[k] for k in ("color", "rast", "pos", "tri", "topology_hash",
                                                                    "pos_gradient_boost"))
        _contiguous("antialias", color, rast, pos, tri)
        _f32("antialias", color, rast, pos)
        _i32("antialias tri", tri)
        _need(color.ndim == 4 and rast.shape[:3] == color.shape[:3], "color and rast must match in [minibatch, height, width]")
        _need(topology_hash is None and boost == 1.0, "the double serves the defaults of topology_hash and pos_gradient_boost")
        return dr.BACKENDS["cpu"].antialias(color, rast, pos, tri, None, 1.0)


def install(monkeypatch) -> Double:
    """Put the double behind nvdiffrast.torch's public names for the test's lifetime."""
    double = Double()
    monkeypatch.setattr(nvdr, "RasterizeCudaContext", CpuRasterizeContext)
    for name in OPS:
        monkeypatch.setattr(nvdr, name, getattr(double, name))
    return double


# ---- nvdiffrast's definitions, in PyTorch -------------------------------------------------------------------

def _pixel_triangles(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor):
    """(mask [B, H, W], clip positions of each covered pixel's triangle [N, 3 (vertex), 4], pixel NDC [N, 2])."""
    B, H, W, _ = rast.shape
    mask = rast[..., 3] > 0
    b, y, x = mask.nonzero(as_tuple=True)
    tid = rast[b, y, x, 3].long() - 1
    verts = tri.long()[tid]  # [N, 3]
    clip = pos[b.unsqueeze(1), verts]  # [N, 3, 4]
    ndc = torch.stack([(2 * x.to(pos.dtype) + 1) / W - 1, (2 * y.to(pos.dtype) + 1) / H - 1], dim=-1)
    return mask, (b, y, x), clip, ndc, verts


def barycentric_derivatives(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor) -> torch.Tensor:
    """rast_db [B, H, W, 4] = (du/dX, du/dY, dv/dX, dv/dY) in pixels, perspective-correct: with
    M = [[x_i], [y_i], [w_i]] (columns = the triangle's clip vertices), q = M^-1 (X_ndc, Y_ndc, 1) and
    (u, v, 1 - u - v) = q / sum(q)."""
    B, H, W, _ = rast.shape
    out = torch.zeros(B, H, W, 4, dtype=torch.float32)
    mask, (b, y, x), clip, ndc, _ = _pixel_triangles(pos.double(), tri, rast)
    if len(b) == 0:
        return out
    M = torch.stack([clip[..., 0], clip[..., 1], clip[..., 3]], dim=1)  # [N, 3 (x, y, w), 3 (vertex)]
    ok = torch.linalg.det(M).abs() > 1e-12
    Minv = torch.linalg.inv(torch.where(ok[:, None, None], M, torch.eye(3, dtype=M.dtype)))
    p = torch.cat([ndc, torch.ones_like(ndc[:, :1])], dim=-1)  # [N, 3]
    q = torch.einsum("nij,nj->ni", Minv, p)
    S = q.sum(-1, keepdim=True)
    derivs = []
    for axis, scale in ((0, 2.0 / W), (1, 2.0 / H)):  # d NDC / d pixel
        dq = Minv[:, :, axis]
        db = (dq * S - q * dq.sum(-1, keepdim=True)) / S ** 2 * scale  # [N, 3]
        derivs.append(db)
    db_dx, db_dy = derivs
    vals = torch.stack([db_dx[:, 0], db_dy[:, 0], db_dx[:, 1], db_dy[:, 1]], dim=-1)
    vals = torch.where(ok[:, None], vals, torch.zeros_like(vals))
    out[b, y, x] = vals.float()
    return out


def attribute_derivatives(attr: torch.Tensor, rast: torch.Tensor, rast_db: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """out_da [B, H, W, 2 * C]: (dA/dX, dA/dY) per attribute, A = u a0 + v a1 + (1 - u - v) a2; differentiable in
    attr and rast_db."""
    B, H, W, _ = rast.shape
    C = attr.shape[-1]
    mask = rast[..., 3] > 0
    b, y, x = mask.nonzero(as_tuple=True)
    verts = tri.long()[rast[b, y, x, 3].long() - 1]  # [N, 3]
    a = attr[(b if attr.shape[0] > 1 else torch.zeros_like(b)).unsqueeze(1), verts]  # [N, 3, C]
    d0, d1 = a[:, 0] - a[:, 2], a[:, 1] - a[:, 2]
    db = rast_db[b, y, x]  # [N, 4]
    dX = db[:, 0:1] * d0 + db[:, 2:3] * d1
    dY = db[:, 1:2] * d0 + db[:, 3:4] * d1
    vals = torch.stack([dX, dY], dim=-1).reshape(-1, 2 * C)
    out = torch.zeros(B * H * W, 2 * C, dtype=attr.dtype)
    flat = (b * H + y) * W + x
    return out.index_put((flat,), vals).view(B, H, W, 2 * C)


def mip_stack(tex: torch.Tensor, max_mip_level: int | None) -> list[torch.Tensor]:
    """Levels [B, TH >> i, TW >> i, C], each the 2x2 box filter of the one above, down to 1 px (or max_mip_level)."""
    levels = [tex]
    while max(levels[-1].shape[1:3]) > 1 and (max_mip_level is None or len(levels) <= max_mip_level):
        t = levels[-1].permute(0, 3, 1, 2)
        _need(all(s % 2 == 0 or s == 1 for s in t.shape[2:]), "Mip-map size error - cannot downsample an odd extent greater than 1")
        t = F.avg_pool2d(t, kernel_size=(min(2, t.shape[2]), min(2, t.shape[3])))
        levels.append(t.permute(0, 2, 3, 1).contiguous())
    return levels


def mipmapped_texture(tex: torch.Tensor, uv: torch.Tensor, uv_da: torch.Tensor, filter_mode: str, boundary_mode: str,
                      max_mip_level: int | None) -> torch.Tensor:
    """Trilinear (or nearest-level) mipmapped lookup, the level from the uv footprint as texture.cu's calculateMipLevel."""
    levels = mip_stack(tex, max_mip_level)
    TH, TW = tex.shape[1:3]
    dsdx, dsdy, dtdx, dtdy = (uv_da[..., 0] * TW, uv_da[..., 1] * TW, uv_da[..., 2] * TH, uv_da[..., 3] * TH)
    A = dsdx ** 2 + dtdx ** 2
    B = dsdy ** 2 + dtdy ** 2
    C = dsdx * dsdy + dtdx * dtdy
    major = 0.5 * (A + B) + torch.sqrt(0.25 * (A - B) ** 2 + C ** 2)
    flevel = (0.5 * torch.log2(major.clamp_min(1e-30))).clamp(0, len(levels) - 1).detach().unsqueeze(-1)
    if filter_mode == "linear-mipmap-nearest":
        flevel = flevel.round()
    samples = [dr.BACKENDS["cpu"].texture(level, uv, None, None, None, "linear", boundary_mode, None) for level in levels]
    out = torch.zeros_like(samples[0])
    for i, s in enumerate(samples):
        weight = (1 - (flevel - i).abs()).clamp_min(0)  # hat weights: levels floor(f) and floor(f) + 1
        out = out + weight * s
    return out

