"""Cameras: random orbit sampling (DreamFusion / Magic3D ranges), rays, and clip-space projection.

Conventions (shared by the NeRF renderer, the rasteriser, the prior's data set and glTF export):
- world: right-handed, +Y up; objects live in the cube [-1, 1]^3.
- azimuth 0 deg looks at the object's front (camera on +Z), azimuth grows towards +X;
  elevation is the angle above the XZ plane.
- camera space is OpenGL's: the camera looks down -Z, +Y is up, +X is right.
- images are row-major with row 0 at the top: ``[B, H, W, C]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Tuple

import torch

from ..config import bounded


@dataclass
class CameraConfig:
    """Ranges of the random orbit cameras (degrees and scene units)."""

    elevation_range: Tuple[float, float] = (-10.0, 45.0)
    azimuth_range: Tuple[float, float] = (-180.0, 180.0)
    distance_range: Tuple[float, float] = bounded((2.2, 2.8), gt=0)
    fov_range: Tuple[float, float] = bounded((40.0, 55.0), gt=0, le=170)  # vertical field of view, jittered per view
    # point light: direction of the camera, perturbed, at a multiple of the camera distance
    light_distance_range: Tuple[float, float] = bounded((0.8, 1.5), gt=0)
    light_perturb: float = bounded(1.0, ge=0)
    # elevation is sampled uniformly on the sphere's band (not in angle) so views are unbiased
    uniform_sphere_elevation: bool = True



def coarse_camera_config() -> CameraConfig:
    """The coarse stage's default views: 40-60 degrees up (see CoarseConfig.cameras for why); the
    latent prior's world renders half of its images from them."""
    return CameraConfig(elevation_range=(40.0, 60.0))


@dataclass
class Cameras:
    """A batch of B pinhole cameras looking at the origin.

    c2w: [B, 4, 4] camera-to-world (OpenGL camera axes); fov_y: [B] radians;
    azimuth, elevation: [B] degrees; distance: [B]; light_position: [B, 3] world-space point light.
    """

    c2w: torch.Tensor
    fov_y: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor
    distance: torch.Tensor
    light_position: torch.Tensor

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def position(self) -> torch.Tensor:
        """[B, 3] camera centres in world space."""
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(getattr(self, f).to(device) for f in ("c2w", "fov_y", "azimuth", "elevation", "distance", "light_position")))

    def __getitem__(self, idx) -> "Cameras":
        return Cameras(*(getattr(self, f)[idx] for f in ("c2w", "fov_y", "azimuth", "elevation", "distance", "light_position")))

    def rays(self, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions through pixel centres, both [B, H, W, 3] (row 0 = top)."""
        B = len(self)
        device, dtype = self.c2w.device, self.c2w.dtype
        ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        tan = torch.tan(self.fov_y / 2).view(B, 1, 1)
        aspect = width / height
        dx = (2 * x - 1).unsqueeze(0) * tan * aspect
        dy = (1 - 2 * y).unsqueeze(0) * tan
        d_cam = torch.stack([dx, dy, -torch.ones_like(dx)], dim=-1)  # [B, H, W, 3]
        R = self.c2w[:, :3, :3]
        d = torch.einsum("bij,bhwj->bhwi", R, d_cam)
        d = d / d.norm(dim=-1, keepdim=True)
        o = self.position.view(B, 1, 1, 3).expand_as(d)
        return o, d

    def projection(self, aspect: float = 1.0, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
        """[B, 4, 4] OpenGL perspective matrices."""
        B = len(self)
        f = 1.0 / torch.tan(self.fov_y / 2)
        P = torch.zeros(B, 4, 4, device=self.c2w.device, dtype=self.c2w.dtype)
        P[:, 0, 0] = f / aspect
        P[:, 1, 1] = f
        P[:, 2, 2] = -(far + near) / (far - near)
        P[:, 2, 3] = -2 * far * near / (far - near)
        P[:, 3, 2] = -1
        return P

    def mvp(self, aspect: float = 1.0, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
        """[B, 4, 4] world-to-clip matrices. Clip y is up: rasterised images have row 0 at the bottom
        (nvdiffrast's convention), so flip them vertically to match :meth:`rays` images."""
        return self.projection(aspect, near, far) @ torch.linalg.inv(self.c2w)


def look_at_origin(position: torch.Tensor) -> torch.Tensor:
    """[B, 4, 4] camera-to-world matrices for cameras at ``position`` [B, 3] looking at the origin, +Y up."""
    back = position / position.norm(dim=-1, keepdim=True)  # camera +Z points away from the target
    up_world = torch.tensor([0.0, 1.0, 0.0], device=position.device, dtype=position.dtype).expand_as(back)
    right = torch.linalg.cross(up_world, back, dim=-1)
    # straight above or below: any right vector will do
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], device=position.device, dtype=position.dtype), right)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.eye(4, device=position.device, dtype=position.dtype).repeat(position.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = up
    c2w[:, :3, 2] = back
    c2w[:, :3, 3] = position
    return c2w


def orbit_position(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """[B, 3] world positions on the orbit (azimuth 0 = +Z, the front)."""
    az = torch.deg2rad(azimuth_deg)
    el = torch.deg2rad(elevation_deg)
    return torch.stack(
        [distance * torch.cos(el) * torch.sin(az), distance * torch.sin(el), distance * torch.cos(el) * torch.cos(az)], dim=-1
    )


def make_cameras(
    azimuth_deg: torch.Tensor,
    elevation_deg: torch.Tensor,
    distance: torch.Tensor,
    fov_y_deg: torch.Tensor,
    light_position: torch.Tensor | None = None,
) -> Cameras:
    """Cameras at the given orbit coordinates ([B] each); the light defaults to the camera position."""
    pos = orbit_position(azimuth_deg, elevation_deg, distance)
    return Cameras(
        c2w=look_at_origin(pos),
        fov_y=torch.deg2rad(fov_y_deg),
        azimuth=azimuth_deg,
        elevation=elevation_deg,
        distance=distance,
        light_position=pos.clone() if light_position is None else light_position,
    )


def _uniform(n: int, lo_hi: Tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def sample_cameras(n: int, config: CameraConfig, generator: torch.Generator | None = None) -> Cameras:
    """Draw ``n`` random orbit cameras (on the CPU, from ``generator``, so runs are reproducible)."""
    if config.uniform_sphere_elevation:
        lo, hi = (math.sin(math.radians(e)) for e in config.elevation_range)
        elevation = torch.rad2deg(torch.asin(_uniform(n, (lo, hi), generator)))
    else:
        elevation = _uniform(n, config.elevation_range, generator)
    azimuth = _uniform(n, config.azimuth_range, generator)
    distance = _uniform(n, config.distance_range, generator)
    fov = _uniform(n, config.fov_range, generator)
    cam_pos = orbit_position(azimuth, elevation, distance)
    # DreamFusion: light near the camera direction, perturbed, at a random multiple of its distance
    light_dir = cam_pos / cam_pos.norm(dim=-1, keepdim=True) + config.light_perturb * torch.randn(n, 3, generator=generator)
    light_dir = light_dir / light_dir.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    light = light_dir * distance[:, None] * _uniform(n, config.light_distance_range, generator)[:, None]
    return make_cameras(azimuth, elevation, distance, fov, light)


def turntable_cameras(n: int, elevation_deg: float = 15.0, distance: float = 2.5, fov_deg: float = 45.0) -> Cameras:
    """``n`` cameras evenly spaced in azimuth starting at the front, for previews and turntables."""
    az = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    az = torch.where(az > 180, az - 360, az)
    return make_cameras(az, torch.full((n,), elevation_deg), torch.full((n,), distance), torch.full((n,), fov_deg))


def view_label(azimuth_deg: float, elevation_deg: float, front_span: float = 90.0, overhead_above: float = 60.0) -> str:
    """DreamFusion's view naming: overhead above ``overhead_above`` deg elevation, else front within
    ±front_span/2 of azimuth 0, back within ±front_span/2 of 180, side otherwise."""
    if elevation_deg > overhead_above:
        return "overhead"
    az = (azimuth_deg + 180.0) % 360.0 - 180.0
    if abs(az) <= front_span / 2:
        return "front"
    if abs(az) >= 180.0 - front_span / 2:
        return "back"
    return "side"


VIEW_LABELS = ("front", "side", "back", "overhead")


def view_prompt(prompt: str, label: str) -> str:
    """The view-dependent prompt, e.g. ``"a red cube, side view"`` (the embedded prior's captions)."""
    return f"{prompt}, {label} view"
