"""The coarse NeRF field: hash-grid features -> small MLP -> density (with a start-up blob) and albedo."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint
from ..config import bounded, from_dict
from .hash_grid import HashGrid, HashGridConfig


@dataclass
class FieldConfig:
    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = bounded(64, ge=1, le=4096)
    layers: int = bounded(2, ge=0, le=32)
    # DreamFusion's density blob: raw density += scale * exp(-r^2 / (2 std^2)), so optimisation starts
    # from a solid ball in the middle instead of empty space
    blob_scale: float = 10.0
    blob_std: float = bounded(0.5, gt=0)
    density_bias: float = -1.0
    normal_eps: float = bounded(0.02, gt=0)  # finite-difference step for normals (scene units): larger = smoother shading


class NeRFField(nn.Module):
    """density(x [N, 3]) -> [N] >= 0; albedo(x) -> [N, 3] in [0, 1]; normals from the density gradient."""

    def __init__(self, config: FieldConfig = FieldConfig(), bound: float = 1.0):
        super().__init__()
        self.config, self.bound = config, bound
        self.encoding = HashGrid(config.hash_grid, bound)
        dims = [self.encoding.output_dim] + [config.hidden] * config.layers + [4]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*layers)

    def _blob(self, x: torch.Tensor) -> torch.Tensor:
        r2 = (x * x).sum(-1)
        return self.config.blob_scale * torch.exp(-r2 / (2 * self.config.blob_std ** 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] -> (density [N], albedo [N, 3])."""
        h = self.mlp(self.encoding(x))
        density = F.softplus(h[:, 0] + self._blob(x) + self.config.density_bias)
        albedo = torch.sigmoid(h[:, 1:4])
        return density, albedo

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[1]

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Unit outward normals [N, 3] = -grad(density) / |grad(density)|, by finite differences on a
        tetrahedron (4 density evaluations instead of 6; cheaper than double backward on a CPU)."""
        eps = self.config.normal_eps
        k = _TETRAHEDRON.to(device=x.device, dtype=x.dtype)  # [4, 3]
        d = self.density((x[:, None, :] + eps * k).reshape(-1, 3)).view(-1, 4)
        grad = (d[:, :, None] * k).sum(1) / (4 * eps)
        return -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)


_TETRAHEDRON = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


def save_field_state(field_: NeRFField) -> dict:
    from ..config import to_dict

    return {"config": to_dict(field_.config), "bound": field_.bound, "state": field_.state_dict()}


def field_from_state(state: dict, device: torch.device | str = "cpu") -> NeRFField:
    f = NeRFField(from_dict(FieldConfig, state["config"]), state["bound"])
    f.load_state_dict(state["state"])
    return f.to(device).eval()


def load_field(path, device: torch.device | str = "cpu") -> NeRFField:
    """The final coarse field saved in RUN/coarse/field.pt (checksummed)."""
    return field_from_state(load_checkpoint(path)["field"], device)
