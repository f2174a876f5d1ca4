"""CPU backend: autograd glue over the C++ kernels in cpp/ (rasterize, interpolate, texture, antialias)."""
from __future__ import annotations

import numpy as np
import torch

from ..engine.kernels import kernel

_FILTERS = {"nearest": 0, "linear": 1}
_BOUNDARIES = {"wrap": 0, "clamp": 1, "zero": 2}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().cpu().numpy()


def _tri(tri: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tri.detach().cpu().numpy(), dtype=np.int32)


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, tri, height, width):
        rast = torch.from_numpy(kernel("rasterize_fwd", pos.dtype)(_np(pos), _tri(tri), height, width)).to(pos.device)
        ctx.save_for_backward(pos, tri, rast)
        return rast

    @staticmethod
    def backward(ctx, grad_rast):
        pos, tri, rast = ctx.saved_tensors
        g = kernel("rasterize_bwd", pos.dtype)(_np(pos), _tri(tri), _np(rast), _np(grad_rast.to(pos.dtype)))
        return torch.from_numpy(g).to(pos.device), None, None, None


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, rast, tri):
        out = kernel("interpolate_fwd", attr.dtype)(_np(attr), _np(rast.to(attr.dtype)), _tri(tri))
        ctx.save_for_backward(attr, rast, tri)
        return torch.from_numpy(out).to(attr.device)

    @staticmethod
    def backward(ctx, grad_out):
        attr, rast, tri = ctx.saved_tensors
        ga, gr = kernel("interpolate_bwd", attr.dtype)(_np(attr), _np(rast.to(attr.dtype)), _tri(tri), _np(grad_out.to(attr.dtype)))
        return torch.from_numpy(ga).to(attr.device), torch.from_numpy(gr).to(rast.dtype).to(rast.device), None


class _Texture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tex, uv, filter_mode, boundary_mode):
        ctx.modes = (_FILTERS[filter_mode], _BOUNDARIES[boundary_mode])
        out = kernel("texture_fwd", tex.dtype)(_np(tex), _np(uv.to(tex.dtype)), *ctx.modes)
        ctx.save_for_backward(tex, uv)
        return torch.from_numpy(out).to(tex.device)

    @staticmethod
    def backward(ctx, grad_out):
        tex, uv = ctx.saved_tensors
        gt, gu = kernel("texture_bwd", tex.dtype)(_np(tex), _np(uv.to(tex.dtype)), _np(grad_out.to(tex.dtype)), *ctx.modes)
        return torch.from_numpy(gt).to(tex.device), torch.from_numpy(gu).to(uv.dtype).to(uv.device), None, None


class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color, rast, pos, tri):
        out = kernel("antialias_fwd", color.dtype)(_np(color), _np(rast.to(color.dtype)), _np(pos.to(color.dtype)), _tri(tri))
        ctx.save_for_backward(color, rast, pos, tri)
        return torch.from_numpy(out).to(color.device)

    @staticmethod
    def backward(ctx, grad_out):
        color, rast, pos, tri = ctx.saved_tensors
        gc, gp = kernel("antialias_bwd", color.dtype)(_np(color), _np(rast.to(color.dtype)), _np(pos.to(color.dtype)), _tri(tri),
                                                       _np(grad_out.to(color.dtype)))
        return torch.from_numpy(gc).to(color.device), None, torch.from_numpy(gp).to(pos.dtype).to(pos.device), None


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """pos [B, V, 4] clip space, tri [F, 3] -> rast [B, H, W, 4]."""
    return _Rasterize.apply(pos, tri, int(resolution[0]), int(resolution[1]))


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """attr [B or 1, V, C] -> [B, H, W, C]."""
    return _Interpolate.apply(attr, rast, tri)


def texture(tex: torch.Tensor, uv: torch.Tensor, filter_mode: str, boundary_mode: str) -> torch.Tensor:
    """tex [B or 1, TH, TW, C], uv [B, H, W, 2] -> [B, H, W, C]."""
    return _Texture.apply(tex, uv, filter_mode, boundary_mode)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    return _Antialias.apply(color, rast, pos, tri)
