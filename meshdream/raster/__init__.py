"""Differentiable rasterisation with nvdiffrast's functional API, on any device.

    import meshdream.raster as dr
    ctx = dr.get_context(device)                                  # our C++ backend on CPU, nvdiffrast on CUDA
    rast, rast_db = dr.rasterize(ctx, pos, tri, resolution=(H, W))  # pos [B, V, 4] clip space, tri [F, 3] int32
    attr_out, _ = dr.interpolate(attr, rast, tri, ctx=ctx)         # attr [B, V, C] or [V, C] -> [B, H, W, C]
    color = dr.texture(tex, uv, filter_mode="linear", boundary_mode="wrap", ctx=ctx)
    color = dr.antialias(color, rast, pos, tri, ctx=ctx)

Same layouts and semantics as nvdiffrast: rast = (u, v, z/w, triangle_id + 1), zero where empty; row 0
is y = -1 (the bottom of the image); u, v weight the triangle's vertices 0 and 1. Gradients reach pos
(through the barycentrics and the silhouette antialiasing), attributes, textures and uv.

Backends (a registry, because users really swap them): "cpu" (C++, OpenMP), "reference" (pure
PyTorch, for checking and benchmarking; it borrows the C++ antialias) and "nvdiffrast" (CUDA; imported
only when used). Every op is served by the backend of the context it is given: ``rasterize`` takes a
context as nvdiffrast's does; ``interpolate``, ``texture`` and ``antialias`` take it as the keyword ``ctx``
(a meshdream extension) and, without one, use the default backend of the tensors' device type
(``DEFAULT_BACKENDS``: cpu -> "cpu", cuda -> "nvdiffrast"), so nvdiffrast-style calls work unchanged.
``register_backend(name, backend, default_for=(...))`` adds a backend; contexts naming it, and devices
it is the default for, are then served by it. A backend declares what it can do beyond the four ops'
common ground in ``capabilities`` (mipmaps, image-space derivatives); callers ask
``capabilities(ctx).mipmaps``, never the backend's name.
CPU limits, documented rather than faked: rast_db / diff_attrs (image-space derivatives) come back as
zeros, and mipmapped texture filtering is not available (use filter_mode "linear" or "nearest").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch

from ..errors import MeshdreamError


@dataclass
class RasterContext:
    """Which backend renders, and (for nvdiffrast) its native context."""

    backend: str
    device: torch.device
    native: object = None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the four ops' common ground; callers ask these, never a backend's name."""

    mipmaps: bool = False  # texture filter_mode "linear-mipmap-linear" / "linear-mipmap-nearest"
    image_derivatives: bool = False  # real rast_db / diff_attrs / uv_da (image-space derivatives), not zeros


class RasterBackend:
    """One implementation of the four ops, with nvdiffrast's signatures (``native`` is the backend's own
    context object, from :meth:`native_context`), and what it can do (:attr:`capabilities`)."""

    capabilities = Capabilities()

    def native_context(self, device: torch.device) -> object:
        return None

    def rasterize(self, native, pos, tri, resolution, ranges, grad_db):
        raise NotImplementedError

    def interpolate(self, attr, rast, tri, rast_db, diff_attrs):
        raise NotImplementedError

    def texture(self, tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level):
        raise NotImplementedError

    def antialias(self, color, rast, pos, tri, topology_hash, pos_gradient_boost):
        raise NotImplementedError


BACKENDS: Dict[str, RasterBackend] = {}
DEFAULT_BACKENDS: Dict[str, str] = {}  # torch device type -> backend name


def register_backend(name: str, backend: RasterBackend, default_for: Iterable[str] = ()) -> RasterBackend:
    """Add (or replace) backend ``name``; make it the default for the device types in ``default_for``."""
    if not isinstance(backend, RasterBackend):
        raise TypeError(f"backend {name!r} must be a RasterBackend, got {type(backend).__name__}")
    BACKENDS[name] = backend
    for device_type in default_for:
        DEFAULT_BACKENDS[device_type] = name
    return backend


def _batched(pos: torch.Tensor, ranges: Optional[torch.Tensor]) -> torch.Tensor:
    if pos.ndim == 3:
        if ranges is not None:
            raise ValueError("ranges is only valid with pos of shape [V, 4] (range mode)")
        return pos
    if pos.ndim == 2 and ranges is not None:
        return pos.unsqueeze(0)
    raise ValueError(f"pos must be [B, V, 4] (or [V, 4] with ranges), got shape {tuple(pos.shape)}")


class TorchBackend(RasterBackend):
    """A backend built from a module of autograd functions (``cpu``: the C++ kernels; ``reference``: pure
    PyTorch): argument checks, range mode and the image-space derivatives (zeros) are shared here."""

    def __init__(self, module_name: str, antialias_module: str | None = None):
        self.module_name, self.antialias_module = module_name, antialias_module or module_name

    def _module(self, name: str):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")

    def rasterize(self, native, pos, tri, resolution, ranges, grad_db):
        H, W = int(resolution[0]), int(resolution[1])
        if pos.shape[-1] != 4:
            raise ValueError(f"pos must hold clip-space (x, y, z, w) in its last dimension, got shape {tuple(pos.shape)}")
        if tri.ndim != 2 or tri.shape[1] != 3:
            raise ValueError(f"tri must be [F, 3], got shape {tuple(tri.shape)}")
        impl = self._module(self.module_name)
        p = _batched(pos, ranges)
        if ranges is not None:  # range mode: image i shows triangles tri[start:start + count]
            images = [impl.rasterize(p, tri[int(s): int(s) + int(c)], (H, W)) for s, c in ranges.tolist()]
            for img, (s, _) in zip(images, ranges.tolist()):
                img[..., 3] = torch.where(img[..., 3] > 0, img[..., 3] + int(s), img[..., 3])
            rast = torch.cat(images)
        else:
            rast = impl.rasterize(p, tri, (H, W))
        return rast, torch.zeros_like(rast)

    def interpolate(self, attr, rast, tri, rast_db, diff_attrs):
        a = attr.unsqueeze(0) if attr.ndim == 2 else attr
        out = self._module(self.module_name).interpolate(a, rast, tri)
        n_da = 0 if diff_attrs is None else (a.shape[-1] if diff_attrs == "all" else len(diff_attrs))
        return out, out.new_zeros(*out.shape[:-1], 2 * n_da)

    def texture(self, tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level):
        if filter_mode == "auto":
            filter_mode = "linear"
        if filter_mode not in ("linear", "nearest"):
            raise ValueError(f"texture filter_mode {filter_mode!r} needs mipmaps, which only the nvdiffrast (CUDA) backend has; "
                             "use 'linear' or 'nearest' on the CPU")
        if boundary_mode not in ("wrap", "clamp", "zero"):
            raise ValueError(f"texture boundary_mode {boundary_mode!r} is not supported on the CPU; use wrap, clamp or zero")
        return self._module(self.module_name).texture(tex, uv, filter_mode, boundary_mode)

    def antialias(self, color, rast, pos, tri, topology_hash, pos_gradient_boost):
        p = pos if pos.ndim == 3 else pos.unsqueeze(0).expand(color.shape[0], -1, -1)
        return self._module(self.antialias_module).antialias(color, rast, p, tri)


class NvdiffrastBackend(RasterBackend):
    """NVIDIA's nvdiffrast (CUDA), imported when first used."""

    capabilities = Capabilities(mipmaps=True, image_derivatives=True)

    @staticmethod
    def _nvdr():
        try:
            import nvdiffrast.torch as nvdr
        except ImportError as e:
            raise MeshdreamError(
                "the nvdiffrast backend needs the nvdiffrast package (CUDA): pip install diffrp-nvdiffrast (builds its plugin "
                "with ninja and nvcc on first use) "
                f"(see the README's GPU section), or use --device cpu ({e})"
            ) from None
        return nvdr

    def native_context(self, device):
        nvdr = self._nvdr()
        try:
            return nvdr.RasterizeCudaContext(device=device)
        except ModuleNotFoundError:
            # nvdiffrast 0.3.3 builds its plugin with torch.utils.cpp_extension.load, then imports it by name;
            # recent torch no longer puts the build folder on sys.path (seen with torch 2.11 on an H100)
            _add_nvdiffrast_build_dir_to_path()
            return nvdr.RasterizeCudaContext(device=device)

    def rasterize(self, native, pos, tri, resolution, ranges, grad_db):
        return self._nvdr().rasterize(native, pos, tri, resolution=[int(resolution[0]), int(resolution[1])], ranges=ranges,
                                      grad_db=grad_db)

    def interpolate(self, attr, rast, tri, rast_db, diff_attrs):
        return self._nvdr().interpolate(attr, rast, tri, rast_db=rast_db, diff_attrs=diff_attrs)

    def texture(self, tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level):
        return self._nvdr().texture(tex, uv, uv_da=uv_da, mip_level_bias=mip_level_bias, mip=mip, filter_mode=filter_mode,
                                    boundary_mode=boundary_mode, max_mip_level=max_mip_level)

    def antialias(self, color, rast, pos, tri, topology_hash, pos_gradient_boost):
        return self._nvdr().antialias(color, rast, pos, tri, topology_hash=topology_hash, pos_gradient_boost=pos_gradient_boost)


def _add_nvdiffrast_build_dir_to_path() -> None:
    import importlib
    import sys

    import nvdiffrast
    from torch.utils import cpp_extension

    build_directory = cpp_extension._get_build_directory  # private, but it is what nvdiffrast itself calls
    plugin = "".join(c if c.isalnum() else "_" for c in f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}")
    folder = build_directory(plugin, False)
    if folder not in sys.path:
        sys.path.append(folder)
    sys.path_importer_cache.pop(folder, None)
    importlib.invalidate_caches()


register_backend("cpu", TorchBackend("cpu"), default_for=("cpu",))
register_backend("reference", TorchBackend("reference", antialias_module="cpu"))
register_backend("nvdiffrast", NvdiffrastBackend(), default_for=("cuda",))


def get_context(device: torch.device | str = "cpu", backend: Optional[str] = None) -> RasterContext:
    """A rasteriser context on ``device``: ``backend`` by name, or the device type's default backend."""
    device = torch.device(device)
    if backend is None:
        backend = _default_backend(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasteriser backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return RasterContext(backend, device, BACKENDS[backend].native_context(device))


def capabilities(ctx: RasterContext) -> Capabilities:
    """What the context's backend can do (mipmaps, image-space derivatives)."""
    return BACKENDS[ctx.backend].capabilities


def _default_backend(device: torch.device) -> str:
    """The registered default for ``device``'s type; device types without one get the C++ backend (it works on
    any tensor by copying through host memory)."""
    return DEFAULT_BACKENDS.get(device.type, DEFAULT_BACKENDS.get("cpu", "cpu"))


def _backend(ctx: Optional[RasterContext], tensor: torch.Tensor) -> RasterBackend:
    """The context's backend, or the default one for ``tensor``'s device type."""
    return BACKENDS[ctx.backend if ctx is not None else _default_backend(tensor.device)]


def rasterize(ctx: RasterContext, pos: torch.Tensor, tri: torch.Tensor, resolution, ranges: Optional[torch.Tensor] = None,
              grad_db: bool = True):
    """pos [B, V, 4] (or [V, 4] with ranges), tri [F, 3] -> (rast [B, H, W, 4], rast_db [B, H, W, 4])."""
    return BACKENDS[ctx.backend].rasterize(ctx.native, pos, tri, resolution, ranges, grad_db)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, rast_db: Optional[torch.Tensor] = None,
                diff_attrs=None, *, ctx: Optional[RasterContext] = None):
    """-> (out [B, H, W, C], out_da). out_da: image-space derivatives (nvdiffrast only; zeros on CPU)."""
    return _backend(ctx, rast).interpolate(attr, rast, tri, rast_db, diff_attrs)


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da: Optional[torch.Tensor] = None, mip_level_bias=None, mip=None,
            filter_mode: str = "auto", boundary_mode: str = "wrap", max_mip_level=None, *,
            ctx: Optional[RasterContext] = None) -> torch.Tensor:
    """tex [B or 1, TH, TW, C], uv [B, H, W, 2] -> [B, H, W, C]."""
    return _backend(ctx, uv).texture(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor, topology_hash=None,
              pos_gradient_boost: float = 1.0, *, ctx: Optional[RasterContext] = None) -> torch.Tensor:
    """Blend colours [B, H, W, C] across silhouette edges by their analytic coverage; gradients reach pos."""
    return _backend(ctx, color).antialias(color, rast, pos, tri, topology_hash, pos_gradient_boost)


__all__ = ["RasterContext", "RasterBackend", "Capabilities", "BACKENDS", "DEFAULT_BACKENDS", "register_backend", "get_context",
           "capabilities", "rasterize",
           "interpolate", "texture", "antialias"]
