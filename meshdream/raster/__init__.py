"""Differentiable rasterisation with nvdiffrast's functional API, on any device.

    import meshdream.raster as dr
    ctx = dr.get_context(device)                                  # our C++ backend on CPU, nvdiffrast on CUDA
    rast, rast_db = dr.rasterize(ctx, pos, tri, resolution=(H, W))  # pos [B, V, 4] clip space, tri [F, 3] int32
    attr_out, _ = dr.interpolate(attr, rast, tri)                  # attr [B, V, C] or [V, C] -> [B, H, W, C]
    color = dr.texture(tex, uv, filter_mode="linear", boundary_mode="wrap")
    color = dr.antialias(color, rast, pos, tri)

Same layouts and semantics as nvdiffrast: rast = (u, v, z/w, triangle_id + 1), zero where empty; row 0
is y = -1 (the bottom of the image); u, v weight the triangle's vertices 0 and 1. Gradients reach pos
(through the barycentrics and the silhouette antialiasing), attributes, textures and uv.

Backends (a registry, because users really swap them): "cpu" (C++, OpenMP), "reference" (pure
PyTorch, for checking and benchmarking) and "nvdiffrast" (CUDA; imported only when used).
CPU limits, documented rather than faked: rast_db / diff_attrs (image-space derivatives) come back as
zeros, and mipmapped texture filtering is not available (use filter_mode "linear" or "nearest").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from ..errors import MeshdreamError


@dataclass
class RasterContext:
    """Which backend renders, and (for nvdiffrast) its native context."""

    backend: str
    device: torch.device
    native: object = None


BACKENDS: Dict[str, Callable[[torch.device], RasterContext]] = {}


def register_backend(name: str):
    def deco(factory):
        BACKENDS[name] = factory
        return factory

    return deco


@register_backend("cpu")
def _cpu(device: torch.device) -> RasterContext:
    return RasterContext("cpu", torch.device("cpu"))


@register_backend("reference")
def _reference(device: torch.device) -> RasterContext:
    return RasterContext("reference", device)


@register_backend("nvdiffrast")
def _nvdiffrast(device: torch.device) -> RasterContext:
    try:
        import nvdiffrast.torch as nvdr
    except ImportError as e:
        raise MeshdreamError(
            "the nvdiffrast backend needs the nvdiffrast package (CUDA): pip install diffrp-nvdiffrast (builds its plugin "
            "with ninja and nvcc on first use) "
            f"(see the README's GPU section), or use --device cpu ({e})"
        ) from None
    try:
        glctx = nvdr.RasterizeCudaContext(device=device)
    except ModuleNotFoundError:
        # nvdiffrast 0.3.3 builds its plugin with torch.utils.cpp_extension.load, then imports it by name;
        # recent torch no longer puts the build folder on sys.path (seen with torch 2.11 on an H100)
        _add_nvdiffrast_build_dir_to_path()
        glctx = nvdr.RasterizeCudaContext(device=device)
    return RasterContext("nvdiffrast", device, glctx)


def _add_nvdiffrast_build_dir_to_path() -> None:
    import importlib
    import sys

    import nvdiffrast
    from torch.utils import cpp_extension

    name = cpp_extension._get_build_directory  # private, but it is what nvdiffrast itself calls
    plugin = "".join(c if c.isalnum() else "_" for c in f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}")
    folder = name(plugin, False)
    if folder not in sys.path:
        sys.path.append(folder)
    sys.path_importer_cache.pop(folder, None)
    importlib.invalidate_caches()


def get_context(device: torch.device | str = "cpu", backend: Optional[str] = None) -> RasterContext:
    """A rasteriser context: nvdiffrast on CUDA devices, our C++ backend on the CPU (default)."""
    device = torch.device(device)
    if backend is None:
        backend = "nvdiffrast" if device.type == "cuda" else "cpu"
    if backend not in BACKENDS:
        raise MeshdreamError(f"unknown rasteriser backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[backend](device)


def _impl(ctx: RasterContext):
    if ctx.backend == "cpu":
        from . import cpu

        return cpu
    from . import reference

    return reference


def _batched(pos: torch.Tensor, ranges: Optional[torch.Tensor]) -> torch.Tensor:
    if pos.ndim == 3:
        if ranges is not None:
            raise ValueError("ranges is only valid with pos of shape [V, 4] (range mode)")
        return pos
    if pos.ndim == 2 and ranges is not None:
        return pos.unsqueeze(0)
    raise ValueError(f"pos must be [B, V, 4] (or [V, 4] with ranges), got shape {tuple(pos.shape)}")


def rasterize(ctx: RasterContext, pos: torch.Tensor, tri: torch.Tensor, resolution, ranges: Optional[torch.Tensor] = None,
              grad_db: bool = True):
    """-> (rast [B, H, W, 4], rast_db [B, H, W, 4])."""
    H, W = int(resolution[0]), int(resolution[1])
    if ctx.backend == "nvdiffrast":
        import nvdiffrast.torch as nvdr

        return nvdr.rasterize(ctx.native, pos, tri, resolution=[H, W], ranges=ranges, grad_db=grad_db)
    if pos.shape[-1] != 4:
        raise ValueError(f"pos must hold clip-space (x, y, z, w) in its last dimension, got shape {tuple(pos.shape)}")
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise ValueError(f"tri must be [F, 3], got shape {tuple(tri.shape)}")
    impl = _impl(ctx)
    p = _batched(pos, ranges)
    if ranges is not None:  # range mode: image i shows triangles tri[start:start + count]
        images = [impl.rasterize(p, tri[int(s): int(s) + int(c)], (H, W)) for s, c in ranges.tolist()]
        for img, (s, _) in zip(images, ranges.tolist()):
            img[..., 3] = torch.where(img[..., 3] > 0, img[..., 3] + int(s), img[..., 3])
        rast = torch.cat(images)
    else:
        rast = impl.rasterize(p, tri, (H, W))
    return rast, torch.zeros_like(rast)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, rast_db: Optional[torch.Tensor] = None,
                diff_attrs=None):
    """-> (out [B, H, W, C], out_da). out_da: image-space derivatives (nvdiffrast only; zeros on CPU)."""
    if rast.is_cuda and attr.is_cuda and _has_nvdiffrast():
        import nvdiffrast.torch as nvdr

        return nvdr.interpolate(attr, rast, tri, rast_db=rast_db, diff_attrs=diff_attrs)
    a = attr.unsqueeze(0) if attr.ndim == 2 else attr
    impl = _impl(RasterContext("cpu" if rast.device.type == "cpu" else "reference", rast.device))
    out = impl.interpolate(a, rast, tri)
    n_da = 0 if diff_attrs is None else (a.shape[-1] if diff_attrs == "all" else len(diff_attrs))
    return out, out.new_zeros(*out.shape[:-1], 2 * n_da)


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da: Optional[torch.Tensor] = None, mip_level_bias=None, mip=None,
            filter_mode: str = "auto", boundary_mode: str = "wrap", max_mip_level=None) -> torch.Tensor:
    """tex [B or 1, TH, TW, C], uv [B, H, W, 2] -> [B, H, W, C]."""
    if tex.is_cuda and _has_nvdiffrast():
        import nvdiffrast.torch as nvdr

        return nvdr.texture(tex, uv, uv_da=uv_da, mip_level_bias=mip_level_bias, mip=mip, filter_mode=filter_mode,
                            boundary_mode=boundary_mode, max_mip_level=max_mip_level)
    if filter_mode == "auto":
        filter_mode = "linear"
    if filter_mode not in ("linear", "nearest"):
        raise MeshdreamError(f"texture filter_mode {filter_mode!r} needs mipmaps, which only the nvdiffrast (CUDA) backend has; "
                             "use 'linear' or 'nearest' on the CPU")
    if boundary_mode not in ("wrap", "clamp", "zero"):
        raise MeshdreamError(f"texture boundary_mode {boundary_mode!r} is not supported on the CPU; use wrap, clamp or zero")
    impl = _impl(RasterContext("cpu" if uv.device.type == "cpu" else "reference", uv.device))
    return impl.texture(tex, uv, filter_mode, boundary_mode)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor, topology_hash=None,
              pos_gradient_boost: float = 1.0) -> torch.Tensor:
    """Blend colours across silhouette edges by their analytic coverage; gradients reach pos."""
    if color.is_cuda and _has_nvdiffrast():
        import nvdiffrast.torch as nvdr

        return nvdr.antialias(color, rast, pos, tri, topology_hash=topology_hash, pos_gradient_boost=pos_gradient_boost)
    from . import cpu

    p = pos if pos.ndim == 3 else pos.unsqueeze(0).expand(color.shape[0], -1, -1)
    return cpu.antialias(color, rast, p, tri)


def _has_nvdiffrast() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["RasterContext", "BACKENDS", "register_backend", "get_context", "rasterize", "interpolate", "texture", "antialias"]
