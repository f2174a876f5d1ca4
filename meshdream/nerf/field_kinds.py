"""Field kinds: how the coarse field's first network output becomes density, where its surface is, and the
losses that keep it that kind of field. One table, ``FIELD_KINDS = {name: kind}`` (``FieldConfig.kind``).

- ``density``: the output is raw density, plus DreamFusion's start-up blob; the surface level is chosen
  from the field's values at extraction (extract's "auto"); no losses of its own.
- ``sdf``: the output is a signed distance (plus a start-up sphere), turned into density by VolSDF's Laplace
  CDF, sigma = Psi_beta(-sdf) / beta. Its surface is the zero level, density 1 / (2 beta); the eikonal term
  (|grad sdf| = 1) keeps it a distance and a normal-smoothness term keeps neighbouring normals alike, so SDS
  cannot grow a haze of half-transparent density around the object.

A new kind is a :class:`FieldKind` subclass here and one entry in ``FIELD_KINDS`` (and its name in
``FieldConfig.kind``'s Literal).
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.stage_loop import ramp
from .volume_render import surface_points



class FieldKind:
    """What a kind supplies to the field and to the coarse stage (the defaults: no losses, no annealing).
    ``field`` is the NeRFField that holds the kind (typed nn.Module: nerf/field.py imports this table)."""

    name: str = ""
    start_shape: str = ""  # what to make smaller when the field fills the frame (the coarse stage's advice)

    def density(self, field: nn.Module, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """density [N] >= 0 from points x [N, 3] and the network's outputs h [N, 4]."""
        raise NotImplementedError

    def outward(self, field: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """A scalar function of points [N, 3] -> [N] that grows outwards (its gradient is the outward normal)."""
        raise NotImplementedError

    def surface_density(self, field: nn.Module) -> float | None:
        """The density on the surface, or None where extraction chooses the level from the field's values."""
        return None

    def anneal(self, field: nn.Module, cfg, frac: float) -> None:
        """Set the field's schedule-driven parameters for progress ``frac`` of the coarse stage (cfg: CoarseConfig)."""

    def losses(self, field: nn.Module, cfg, frac: float, generator: torch.Generator, cams, rendered, side: int,
               device: torch.device) -> List[torch.Tensor]:
        """The kind's weighted loss terms for one coarse step (cfg: CoarseConfig; rendered: the SDS render of
        ``cams`` at ``side`` px), in the order they are added."""
        return []


class DensityKind(FieldKind):
    name = "density"
    start_shape = "a smaller start blob (nerf.blob_scale)"

    def density(self, field, x, h):
        return F.softplus(h[:, 0] + blob(field, x) + field.config.density_bias)

    def outward(self, field):
        return lambda p: -field.density(p)


class SdfKind(FieldKind):
    name = "sdf"
    start_shape = "a smaller start sphere (nerf.sdf_radius)"

    def density(self, field, x, h):
        return laplace_density(signed_distance(field, x, h), field.beta)

    def outward(self, field):
        return field.sdf

    def surface_density(self, field):
        return 0.5 / field.beta

    def anneal(self, field, cfg, frac):
        if cfg.sdf_beta_start is not None:
            field.beta = cfg.sdf_beta_start * (cfg.nerf.sdf_beta / cfg.sdf_beta_start) ** frac

    def losses(self, field, cfg, frac, generator, cams, rendered, side, device):
        g, terms = generator, []
        eikonal_weight, smooth_weight = ramp(cfg.eikonal_weight, frac), ramp(cfg.normal_smooth_weight, frac)
        if eikonal_weight > 0:
            box = ((torch.rand(cfg.eikonal_points, 3, generator=g) * 2 - 1) * cfg.bound).to(device)
            terms.append(eikonal_weight * eikonal_loss(field, box))
        if smooth_weight > 0:
            surface = surface_points(cams, rendered, side)
            surface = surface + cfg.surface_jitter * torch.randn(surface.shape, generator=g).to(device)
            shifted = surface + cfg.surface_jitter * torch.randn(surface.shape, generator=g).to(device)
            if len(surface):
                terms.append(smooth_weight * normal_smoothness_loss(field, surface, shifted))
        return terms


FIELD_KINDS: Dict[str, FieldKind] = {"density": DensityKind(), "sdf": SdfKind()}


def blob(field: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DreamFusion's start-up density blob [N] at x [N, 3]: scale * exp(-r^2 / (2 std^2))."""
    r2 = (x * x).sum(-1)
    return field.config.blob_scale * torch.exp(-r2 / (2 * field.config.blob_std ** 2))


def signed_distance(field: nn.Module, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The sdf [N] (negative inside): the network's first output plus the start-up sphere's distance."""
    return h[:, 0] + x.norm(dim=-1) - field.config.sdf_radius


def laplace_density(sdf: torch.Tensor, beta: float) -> torch.Tensor:
    """VolSDF: sigma = Psi_beta(-sdf) / beta, Psi_beta the CDF of a zero-mean Laplace of scale beta.
    1/beta deep inside, 1/(2 beta) on the surface, decaying as exp(-sdf/beta) outside. sdf [N] -> [N]."""
    s = -sdf / beta
    # CDF = 0.5 exp(s) for s <= 0, 1 - 0.5 exp(-s) for s > 0 (both branches finite: exp of -|s|)
    half = 0.5 * torch.exp(-s.abs())
    return torch.where(s <= 0, half, 1 - half) / beta


def eikonal_loss(field_: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """mean (|grad sdf| - 1)^2 at points [N, 3] (IGR / NeuS): keeps the sdf a distance, so the surface
    stays sharp at the scale beta everywhere and the zero level is where the density says."""
    return ((field_.gradient(points).norm(dim=-1) - 1) ** 2).mean()


def normal_smoothness_loss(field_: nn.Module, points: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """mean |n(points) - n(shifted)|^2 over points, shifted [N, 3] (threestudio's 3D normal smoothness):
    neighbouring surface points should face the same way."""
    n = field_.normals(torch.cat([points, shifted]))
    return ((n[: len(points)] - n[len(points):]) ** 2).sum(-1).mean()
