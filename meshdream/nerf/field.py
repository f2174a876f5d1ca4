"""The coarse field: hash-grid features -> small MLP -> density and albedo.

What the MLP's first output means is the field's kind (``FieldConfig.kind``: ``density`` or ``sdf``, the
table in :mod:`meshdream.nerf.field_kinds`): the kind turns it into density, says where the surface is and
which losses keep the field that kind. ``FieldConfig``'s default kind is ``density``; the coarse stage's
default (``CoarseConfig.nerf``) is ``sdf``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..engine.checkpoint import load_checkpoint
from ..errors import CheckpointError, MeshdreamError
from ..config import bounded, from_dict
from .field_kinds import FIELD_KINDS, signed_distance
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
    """density(x [N, 3]) -> [N] >= 0; albedo(x) -> [N, 3] in [0, 1]; outward normals from the gradient of the
    kind's outward function (the sdf, or -density). ``kind``: the entry of FIELD_KINDS that config.kind names."""

    def __init__(self, config: FieldConfig = FieldConfig(), bound: float = 1.0):
        super().__init__()
        self.config, self.bound = config, bound
        self.kind = FIELD_KINDS[config.kind]
        self.beta = config.sdf_beta  # kind "sdf": the Laplace scale now (the coarse stage may anneal it to sdf_beta)
        self.encoding = HashGrid(config.hash_grid, bound)
        # features -> (raw density or sdf, albedo logits); a C++ kernel on the CPU (nerf/mlp.py)
        self.mlp = ReluMLP([self.encoding.output_dim] + [config.hidden] * config.layers + [4])

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] -> signed distance [N] (negative inside); kind "sdf" only."""
        return signed_distance(self, x, self.mlp(self.encoding(x)))

    def _density(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.kind.density(self, x, h)

    @property
    def surface_density(self) -> float | None:
        """The density on the surface (kind "sdf": the zero level, 1 / (2 beta)); None for kind "density",
        whose surface level is chosen from the field's values (extract's "auto")."""
        return self.kind.surface_density(self)

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
        fn = self.kind.outward(self)
        d = fn((x[:, None, :] + eps * k).reshape(-1, 3)).view(-1, 4)
        return (d[:, :, None] * k).sum(1) / (4 * eps)

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Unit outward normals [N, 3]: the normalised gradient."""
        grad = self.gradient(x)
        return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)


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
