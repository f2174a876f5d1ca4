"""The coarse field: hash-grid features -> small MLP -> density and albedo.

Two kinds (``FieldConfig.kind``):
- ``density``: the MLP's first output is raw density, plus DreamFusion's start-up blob;
- ``sdf``: the MLP's first output is a signed distance (plus a start-up sphere), turned into density by
  VolSDF's Laplace CDF, sigma = Psi_beta(-sdf) / beta. Its surface is the zero level, sharp at the scale
  beta, and the eikonal term (|grad sdf| = 1) keeps it a distance, so SDS cannot grow a haze of
  half-transparent density around the object, and the normals are the distance's gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.checkpoint import load_checkpoint
from ..errors import CheckpointError, MeshdreamError
from ..config import bounded, from_dict
from .hash_grid import HashGrid, HashGridConfig
from .mlp import ReluMLP


@dataclass
class FieldConfig:
    kind: Literal["density", "sdf"] = "density"
    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = bounded(64, ge=1, le=4096)
    layers: int = bounded(2, ge=0, le=32)
    # DreamFusion's density blob: raw density += scale * exp(-r^2 / (2 std^2)), so optimisation starts
    # from a solid ball in the middle instead of empty space
    blob_scale: float = 10.0
    blob_std: float = bounded(0.5, gt=0)
    density_bias: float = -1.0
    normal_eps: float = bounded(0.02, gt=0)  # finite-difference step for normals (scene units): larger = smoother shading
    # kind "sdf": start from a sphere of this radius (the distance's analytic part, as the blob is the
    # density's); beta: VolSDF's Laplace scale, the surface's thickness in scene units (a sample step
    # of 32 samples across the box is 0.06: much thinner and stratified samples step over the surface)
    sdf_radius: float = bounded(0.5, gt=0)
    sdf_beta: float = bounded(0.05, gt=0)


class NeRFField(nn.Module):
    """density(x [N, 3]) -> [N] >= 0; albedo(x) -> [N, 3] in [0, 1]; normals from the density gradient."""

    def __init__(self, config: FieldConfig = FieldConfig(), bound: float = 1.0):
        super().__init__()
        self.config, self.bound = config, bound
        self.beta = config.sdf_beta  # kind "sdf": the Laplace scale now (the coarse stage may anneal it to sdf_beta)
        self.encoding = HashGrid(config.hash_grid, bound)
        # features -> (raw density or sdf, albedo logits); a C++ kernel on the CPU (nerf/mlp.py)
        self.mlp = ReluMLP([self.encoding.output_dim] + [config.hidden] * config.layers + [4])

    def _blob(self, x: torch.Tensor) -> torch.Tensor:
        r2 = (x * x).sum(-1)
        return self.config.blob_scale * torch.exp(-r2 / (2 * self.config.blob_std ** 2))

    @property
    def is_sdf(self) -> bool:
        return self.config.kind == "sdf"

    def _sdf(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h[:, 0] + x.norm(dim=-1) - self.config.sdf_radius

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] -> signed distance [N] (negative inside); kind "sdf" only."""
        return self._sdf(x, self.mlp(self.encoding(x)))

    def _density(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.is_sdf:
            return laplace_density(self._sdf(x, h), self.beta)
        return F.softplus(h[:, 0] + self._blob(x) + self.config.density_bias)

    @property
    def surface_density(self) -> float | None:
        """The density on the surface (the sdf's zero level: 1 / (2 beta)); None for kind "density",
        whose surface level is chosen from the field's values (extract's "auto")."""
        return 0.5 / self.beta if self.is_sdf else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] -> (density [N], albedo [N, 3])."""
        h = self.mlp(self.encoding(x))
        return self._density(x, h), torch.sigmoid(h[:, 1:4])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._density(x, self.mlp(self.encoding(x)))

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[1]

    def gradient(self, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """grad [N, 3] of the sdf (kind "sdf") or of -density (kind "density"), both pointing outwards,
        by finite differences on a tetrahedron (4 evaluations instead of 6; cheaper than double backward
        on a CPU, and differentiable in the parameters, so the eikonal term can train through it)."""
        eps = self.config.normal_eps if eps is None else eps
        k = _TETRAHEDRON.to(device=x.device, dtype=x.dtype)  # [4, 3]
        fn = self.sdf if self.is_sdf else (lambda p: -self.density(p))
        d = fn((x[:, None, :] + eps * k).reshape(-1, 3)).view(-1, 4)
        return (d[:, :, None] * k).sum(1) / (4 * eps)

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Unit outward normals [N, 3]: the normalised gradient."""
        grad = self.gradient(x)
        return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def laplace_density(sdf: torch.Tensor, beta: float) -> torch.Tensor:
    """VolSDF: sigma = Psi_beta(-sdf) / beta, Psi_beta the CDF of a zero-mean Laplace of scale beta.
    1/beta deep inside, 1/(2 beta) on the surface, decaying as exp(-sdf/beta) outside. sdf [N] -> [N]."""
    s = -sdf / beta
    # CDF = 0.5 exp(s) for s <= 0, 1 - 0.5 exp(-s) for s > 0 (both branches finite: exp of -|s|)
    half = 0.5 * torch.exp(-s.abs())
    return torch.where(s <= 0, half, 1 - half) / beta


def eikonal_loss(field_: "NeRFField", points: torch.Tensor) -> torch.Tensor:
    """mean (|grad sdf| - 1)^2 at points [N, 3] (IGR / NeuS): keeps the sdf a distance, so the surface
    stays sharp at the scale beta everywhere and the zero level is where the density says."""
    return ((field_.gradient(points).norm(dim=-1) - 1) ** 2).mean()


def normal_smoothness_loss(field_: "NeRFField", points: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """mean |n(points) - n(shifted)|^2 over points, shifted [N, 3] (threestudio's 3D normal smoothness):
    neighbouring surface points should face the same way."""
    n = field_.normals(torch.cat([points, shifted]))
    return ((n[: len(points)] - n[len(points):]) ** 2).sum(-1).mean()


_TETRAHEDRON = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


def save_field_state(field_: NeRFField) -> dict:
    from ..config import to_dict

    return {"config": to_dict(field_.config), "bound": field_.bound, "state": field_.state_dict()}


def field_from_state(state: dict, device: torch.device | str = "cpu") -> NeRFField:
    f = NeRFField(from_dict(FieldConfig, state["config"]), state["bound"])
    f.load_state_dict(state["state"])
    return f.to(device).eval()


def load_field(path, device: torch.device | str = "cpu", remedy: str = "run the coarse stage again") -> NeRFField:
    """The final coarse field saved in RUN/coarse/field.pt (checksummed). A file that is not one (damaged, or a valid
    checkpoint of something else: wrong keys, config or tensor shapes) is a CheckpointError naming it and ``remedy``."""
    state = load_checkpoint(path, remedy=remedy).get("field")
    problem = None
    if not isinstance(state, dict):
        problem = "no 'field' entry" if state is None else f"'field' is a {type(state).__name__}"
    elif not isinstance(state.get("config"), dict) or not isinstance(state.get("state"), dict):
        problem = "the field has no 'config' and 'state' mappings"
    elif isinstance(state.get("bound"), bool) or not isinstance(state.get("bound"), (int, float)) or not 0 < state["bound"] < 1e6:
        problem = f"the field's bound is {state.get('bound')!r}"
    if problem is None:
        try:
            return field_from_state(state, device)
        except (MeshdreamError, KeyError, TypeError, ValueError, RuntimeError) as e:  # from_dict's checks, load_state_dict
            problem = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    raise CheckpointError(f"{str(path)!r} does not hold a coarse field ({problem}); {remedy}")
