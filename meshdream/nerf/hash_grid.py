"""Multi-resolution hash-grid encoding (Instant-NGP) in plain PyTorch: runs on CPU and CUDA."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Instant-NGP's spatial hash primes (the first is 1: coherent along x)
_PRIMES = (1, 2654435761, 805459861)



@dataclass
class HashGridConfig:
    levels: int = 8
    features_per_level: int = 2
    log2_table_size: int = 15
    base_resolution: int = 16
    max_resolution: int = 128


class HashGrid(nn.Module):
    """Encode points x [N, 3] in [-bound, bound]^3 as features [N, levels * features_per_level].

    Level l has resolution floor(base * b^l) with b chosen so the last level reaches max_resolution.
    Coarse levels whose (res + 1)^3 corners fit in the table are indexed densely (no collisions);
    finer ones are hashed. Features are trilinearly interpolated from the 8 cell corners.
    """

    def __init__(self, config: HashGridConfig = HashGridConfig(), bound: float = 1.0):
        super().__init__()
        self.config, self.bound = config, bound
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
        self.table = nn.Parameter(torch.empty(offsets[-1], config.features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.config.levels * self.config.features_per_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] -> features [N, L * F]."""
        N = x.shape[0]
        u = ((x / self.bound + 1) / 2).clamp(0, 1)  # [N, 3] in [0, 1]
        res = self.resolution.view(-1, 1, 1)
        pos = u.unsqueeze(0) * res.to(x.dtype)  # [L, N, 3]
        cell = pos.floor().long().clamp(max=res - 1)
        frac = pos - cell.to(x.dtype)
        # per axis, the two corner coordinates [L, N, 3, 2]; corner index / weight by broadcasting the
        # three axes (2 x 2 x 2) instead of materialising 8 x 3 coordinates
        c = torch.stack([cell, cell + 1], dim=-1)
        r1 = res.unsqueeze(-1) + 1  # [L, 1, 1, 1]
        dense_part = torch.stack([c[:, :, 0], c[:, :, 1] * r1[:, :, 0], c[:, :, 2] * r1[:, :, 0] * r1[:, :, 0]], dim=2)
        hash_part = c * torch.tensor(_PRIMES, device=x.device).view(1, 1, 3, 1)
        dense = self.dense.view(-1, 1, 1, 1)
        part = torch.where(dense, dense_part, hash_part)  # [L, N, 3, 2]
        px, py, pz = part[:, :, 0, :, None, None], part[:, :, 1, None, :, None], part[:, :, 2, None, None, :]
        idx = torch.where(self.dense.view(-1, 1, 1, 1, 1), px + py + pz, px ^ py ^ pz).reshape(-1, N, 8)
        idx = idx % self.table_size.view(-1, 1, 1) + self.offset.view(-1, 1, 1)  # [L, N, 8]
        w = torch.stack([1 - frac, frac], dim=-1)  # [L, N, 3, 2]
        w = (w[:, :, 0, :, None, None] * w[:, :, 1, None, :, None] * w[:, :, 2, None, None, :]).reshape(-1, N, 8)
        feats = self.table[idx.reshape(-1)].view(idx.shape[0], N, 8, -1)  # [L, N, 8, F]
        out = (feats * w.unsqueeze(-1)).sum(2)  # [L, N, F]
        return out.permute(1, 0, 2).reshape(N, -1)
