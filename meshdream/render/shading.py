"""Shading shared by the NeRF renderer, the mesh renderer and the prior's data set.

DreamFusion-style: colour = albedo * (ambient + diffuse * max(0, n.l)); "textureless" uses a white
albedo so SDS must explain the image by geometry alone.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

from ..config import bounded

SHADING_MODES = ("albedo", "lambertian", "textureless")


@dataclass
class ShadingConfig:
    """How an optimisation stage shades its renders (the ``shading`` section of its config)."""

    albedo: float = bounded(0.4, ge=0)  # probabilities of each shading mode per step
    lambertian: float = bounded(0.6, ge=0)
    textureless: float = bounded(0.0, ge=0)  # the embedded prior never saw white objects; SD / IF presets use it
    albedo_only_steps: int = bounded(50, ge=0)  # ambient-only (albedo) shading first, while the geometry forms
    ambient: float = bounded(0.3, ge=0)
    diffuse: float = bounded(0.7, ge=0)


def shade(
    albedo: torch.Tensor,
    normal: torch.Tensor,
    point: torch.Tensor,
    light_position: torch.Tensor,
    mode: str,
    ambient: float = 0.3,
    diffuse: float = 0.7,
) -> torch.Tensor:
    """Shade surface points.

    albedo [..., 3] in [0, 1]; normal [..., 3] unit (outward); point [..., 3] world positions;
    light_position broadcastable to point. Returns colour [..., 3].
    """
    if mode == "albedo":
        return albedo
    if mode not in SHADING_MODES:
        raise ValueError(f"unknown shading mode {mode!r}; choose one of {', '.join(SHADING_MODES)}")
    light_dir = light_position - point
    light_dir = light_dir / light_dir.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    lambert = (normal * light_dir).sum(-1, keepdim=True).clamp_min(0.0)
    base = torch.ones_like(albedo) if mode == "textureless" else albedo
    return (base * (ambient + diffuse * lambert)).clamp(0.0, 1.0)


def choose_shading(probabilities: dict, generator: torch.Generator) -> str:
    """Pick a shading mode with the given (unnormalised) probabilities, from ``generator``."""
    names = [k for k, v in probabilities.items() if v > 0]
    weights = torch.tensor([probabilities[k] for k in names], dtype=torch.float64)
    u = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(weights.sum())
    acc = 0.0
    for name, w in zip(names, weights.tolist()):
        acc += w
        if u < acc:
            return name
    return names[-1]


def shading_for_step(shading, step: int, generator: torch.Generator) -> str:
    """Albedo only for the first ``shading.albedo_only_steps``, then a random mode by the config's odds
    (``shading`` has fields albedo, lambertian, textureless, albedo_only_steps)."""
    if step < shading.albedo_only_steps:
        return choose_shading({"albedo": 1.0}, generator)
    return choose_shading({"albedo": shading.albedo, "lambertian": shading.lambertian, "textureless": shading.textureless}, generator)
