"""Multi-resolution hash-grid encoding (Instant-NGP): a C++ kernel on the CPU, plain PyTorch (the
reference, and the CUDA path) elsewhere; both share the table layout and state-dict keys."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import bounded
from ..engine.kernels import KERNEL_DTYPES, kernel

# Instant-NGP's spatial hash primes (the first is 1: coherent along x)
_PRIMES = (1, 2654435761, 805459861)
# "auto": the C++ kernel (cpp/hash_grid.cpp) for CPU tensors, the PyTorch reference otherwise
_BACKENDS = ("auto", "cpp", "reference")


@dataclass
class HashGridConfig:
    levels: int = bounded(8, ge=1, le=32)
    features_per_level: int = bounded(2, ge=1, le=8)
    log2_table_size: int = bounded(15, ge=4, le=24)
    base_resolution: int = bounded(16, ge=1, le=4096)
    max_resolution: int = bounded(128, ge=1, le=65536)


class HashGrid(nn.Module):
    """Encode points x [N, 3] in [-bound, bound]^3 as features [N, levels * features_per_level].

    Level l has resolution floor(base * b^l) with b chosen so the last level reaches max_resolution.
    Coarse levels whose (res + 1)^3 corners fit in the table are indexed densely (no collisions);
    finer ones are hashed. Features are trilinearly interpolated from the 8 cell corners.
    """

    def __init__(self, config: HashGridConfig = HashGridConfig(), bound: float = 1.0, backend: str = "auto"):
        super().__init__()
        if backend not in _BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(_BACKENDS)}")
        self.config, self.bound, self.backend = config, bound, backend
        L, T = config.levels, 2 ** config.log2_table_size
        growth = math.exp((math.log(config.max_resolution) - math.log(config.base_resolution)) / max(1, L - 1))
        res = [int(math.floor(config.base_resolution * growth ** level + 1e-6)) for level in range(L)]  # no 63.999 -> 63
        sizes = [min(T, (r + 1) ** 3) for r in res]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.register_buffer("resolution", torch.tensor(res, dtype=torch.long), persistent=False)
        self.register_buffer("table_size", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.register_buffer("offset", torch.tensor(offsets[:-1], dtype=torch.long), persistent=False)
        self.register_buffer("dense", torch.tensor([(r + 1) ** 3 <= T for r in res]), persistent=False)
        # the kernel's per-level arguments (resolution, offset, table_size, dense) as plain lists
        self._levels = (res, offsets[:-1], sizes, [(r + 1) ** 3 <= T for r in res])
        self.table = nn.Parameter(torch.empty(offsets[-1], config.features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.config.levels * self.config.features_per_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] -> features [N, L * F]. The C++ kernel on CPU tensors (float32 / float64), the
        PyTorch reference elsewhere (CUDA) or with ``backend="reference"``."""
        if self.backend == "cpp" or (self.backend == "auto" and _use_kernel(x, self.table)):
            return _HashGridFunction.apply(x, self.table, self._levels, self.bound)
        return hash_grid_reference(x, self.table, self.resolution, self.table_size, self.offset, self.dense, self.bound)


def hash_grid_reference(x: torch.Tensor, table: torch.Tensor, resolution: torch.Tensor, table_size: torch.Tensor,
                        offset: torch.Tensor, dense: torch.Tensor, bound: float) -> torch.Tensor:
    """The encoding in plain PyTorch (runs on any device; the CPU kernel's reference).

    x [N, 3], table [rows, F]; per level [L]: resolution, table_size, offset (long) and dense (bool).
    Returns features [N, L * F].
    """
    N = x.shape[0]
    u = ((x / bound + 1) / 2).clamp(0, 1)  # [N, 3] in [0, 1]
    res = resolution.view(-1, 1, 1)
    pos = u.unsqueeze(0) * res.to(x.dtype)  # [L, N, 3]
    cell = pos.floor().long().clamp(max=res - 1)
    frac = pos - cell.to(x.dtype)
    # per axis, the two corner coordinates [L, N, 3, 2]; corner index / weight by broadcasting the
    # three axes (2 x 2 x 2) instead of materialising 8 x 3 coordinates
    c = torch.stack([cell, cell + 1], dim=-1)
    r1 = res.unsqueeze(-1) + 1  # [L, 1, 1, 1]
    dense_part = torch.stack([c[:, :, 0], c[:, :, 1] * r1[:, :, 0], c[:, :, 2] * r1[:, :, 0] * r1[:, :, 0]], dim=2)
    hash_part = c * torch.tensor(_PRIMES, device=x.device).view(1, 1, 3, 1)
    part = torch.where(dense.view(-1, 1, 1, 1), dense_part, hash_part)  # [L, N, 3, 2]
    px, py, pz = part[:, :, 0, :, None, None], part[:, :, 1, None, :, None], part[:, :, 2, None, None, :]
    idx = torch.where(dense.view(-1, 1, 1, 1, 1), px + py + pz, px ^ py ^ pz).reshape(-1, N, 8)
    idx = idx % table_size.view(-1, 1, 1) + offset.view(-1, 1, 1)  # [L, N, 8]
    w = torch.stack([1 - frac, frac], dim=-1)  # [L, N, 3, 2]
    w = (w[:, :, 0, :, None, None] * w[:, :, 1, None, :, None] * w[:, :, 2, None, None, :]).reshape(-1, N, 8)
    feats = table[idx.reshape(-1)].view(idx.shape[0], N, 8, -1)  # [L, N, 8, F]
    out = (feats * w.unsqueeze(-1)).sum(2)  # [L, N, F]
    return out.permute(1, 0, 2).reshape(N, -1)


def _use_kernel(x: torch.Tensor, table: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and table.device.type == "cpu" and x.dtype == table.dtype
            and x.dtype in KERNEL_DTYPES)


class _HashGridFunction(torch.autograd.Function):
    """Autograd glue over meshdream._C.hash_grid_{fwd,bwd}: gradients for the table and for x."""

    @staticmethod
    def forward(ctx, x, table, levels, bound):
        xs = x.detach().to(table.dtype).contiguous()
        ts = table.detach().contiguous()
        out = kernel("hash_grid_fwd", table.dtype)(xs.numpy(), ts.numpy(), *levels, bound, threads=torch.get_num_threads())
        ctx.save_for_backward(xs, ts)
        ctx.levels, ctx.bound, ctx.x_dtype = levels, bound, x.dtype
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):
        xs, ts = ctx.saved_tensors
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g = grad_out.to(ts.dtype).contiguous()
        gt, gx = kernel("hash_grid_bwd", ts.dtype)(xs.numpy(), ts.numpy(), g.numpy(), *ctx.levels, ctx.bound,
                                                   need_table, need_x, threads=torch.get_num_threads())
        gx = torch.from_numpy(gx).to(ctx.x_dtype) if gx is not None else None
        gt = torch.from_numpy(gt) if gt is not None else None
        return gx, gt, None, None
