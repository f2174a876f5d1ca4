"""The shared mesh renderer: rasterise + interpolate (rasterize_mesh), then shade + antialias (shade_fragments)."""
import torch
import trimesh

from meshdream import raster as dr
from meshdream.render.cameras import turntable_cameras
from meshdream.render.mesh_render import rasterize_mesh, render_mesh, shade_fragments


def _sphere():
    s = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    v = torch.tensor(s.vertices, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    return v, torch.tensor(s.faces), torch.rand(len(v), 2, generator=g), torch.rand(8, 8, 3, generator=g)


def test_covered_pixels_alone_give_the_full_frame_result():
    """Texturing and shading the covered pixels alone equals doing every pixel, to the bit, with a light per
    camera, on a coloured background, with the normals image beside the lit one."""
    v, f, uvs, tex = _sphere()
    cams = turntable_cameras(3, distance=2.0)
    lights = torch.tensor([[2.0, 1.0, 2.0], [-2.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    ctx = dr.get_context("cpu")
    images = []
    for covered_only in (False, True):
        fragments = rasterize_mesh(ctx, v, f, cams, 32, uvs=uvs, texture=tex, surface=True, covered_only=covered_only)
        images.append(shade_fragments(fragments, "lambertian", lights, 0.3, 0.7, (0.2, 0.4, 0.6), normals_image=True))
    (full, full_mask), (kept, kept_mask) = images
    assert full.shape == (3, 32, 32, 6) and full_mask.shape == (3, 32, 32, 1)
    assert 0.1 < full_mask.mean() < 0.9
    assert torch.equal(full, kept) and torch.equal(full_mask, kept_mask)
    assert torch.equal(full[0, 0, 0], torch.tensor([0.2, 0.4, 0.6] * 2))  # the background behind both images


def test_render_mesh_is_the_shared_steps_with_each_cameras_light():
    v, f, uvs, tex = _sphere()
    cams = turntable_cameras(2, distance=2.0)
    ctx = dr.get_context("cpu")
    images, alpha = render_mesh(ctx, v, f, uvs, tex, cams, 24, "lambertian")
    lit, mask = shade_fragments(rasterize_mesh(ctx, v, f, cams, 24, uvs=uvs, texture=tex, surface=True), "lambertian",
                                cams.light_position)
    assert torch.equal(images, lit.permute(0, 3, 1, 2)) and torch.equal(alpha, mask.permute(0, 3, 1, 2))
