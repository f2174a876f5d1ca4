#!/usr/bin/env python
"""Which way does the prior's SDS gradient move an image? The mean update (-grad of the SDS loss, over
noise draws) on renders of a torus, of the same torus with its hole filled (a disc), or of a trained
coarse field, at a few elevations; prints the mean update in the image centre (where a torus's hole
shows from above) and on the object's body, and writes the renders and updates as a PNG.

    python scripts/probe_sds_update.py                                 # torus and disc, "a green torus"
    python scripts/probe_sds_update.py --field RUN/coarse/field.pt     # a trained coarse field
        [--prompt "a green torus"] [--elevations 10 30 45] [--draws 24] [--t 0.3] [--out probe.png]

Used for docs/design.md's "The coarse field" (the prior asks for the hole; the field does not follow).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not

import torch  # noqa: E402


def disc_sdf(p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The embedded prior's torus with its hole filled: same outline, same tube, no hole."""
    major, minor = 0.62 * s, 0.28 * s
    rho = torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2)
    return torch.stack([(rho - major).clamp_min(0), p[:, 1]], -1).norm(dim=-1) - minor


def primitive_renders(name: str, colour: str, cams, resolution: int) -> torch.Tensor:
    from meshdream.prior import primitives as P

    B = len(cams)
    saved = P.SDFS
    P.SDFS = saved[:4] + ((P._sdf_torus if name == "torus" else disc_sdf),)  # shape index 4
    try:
        scene = P.Scene(shape=torch.full((B,), 4), albedo=torch.tensor([P.COLOURS[colour]] * B), size=torch.full((B,), 0.75),
                        rotation=P._rotation(torch.zeros(B), torch.zeros(B)))
        return P.render_scene(scene, cams, resolution)
    finally:
        P.SDFS = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default="a green torus")
    ap.add_argument("--colour", default="green", help="the primitives' colour (without --field)")
    ap.add_argument("--field", default=None, help="a coarse field.pt to render instead of the primitives")
    ap.add_argument("--elevations", type=float, nargs="+", default=[10.0, 30.0, 45.0])
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--draws", type=int, default=24)
    ap.add_argument("--t", type=float, default=0.3, help="progress passed to the SDS timestep schedule")
    ap.add_argument("--out", default="probe_sds_update.png")
    args = ap.parse_args()

    from PIL import Image

    from meshdream.render.cameras import make_cameras
    from meshdream.guidance import GuidanceConfig, load_guidance

    guide = load_guidance(GuidanceConfig(), torch.device("cpu"))
    emb = guide.encode_prompt(args.prompt)
    res = guide.resolution
    field_ = None
    if args.field:
        from meshdream.nerf.field import load_field

        field_ = load_field(args.field)
    subjects = ["field"] if field_ is not None else ["torus", "disc"]
    rows = []
    B = args.views
    c = slice(res * 7 // 16, res * 9 // 16)  # the centre 1/8 of the image
    for elev in args.elevations:
        cams = make_cameras(torch.linspace(-180, 180 - 360 / B, B), torch.full((B,), elev), torch.full((B,), 2.5), torch.full((B,), 47.0))
        for name in subjects:
            if field_ is not None:
                from meshdream.nerf.volume_render import render_cameras

                with torch.no_grad():
                    img, _ = render_cameras(field_, cams, res, num_samples=64, bound=field_.bound, shading="lambertian",
                                            background=torch.ones(3))
            else:
                img = primitive_renders(name, args.colour, cams, res)
            update = torch.zeros_like(img)
            for r in range(args.draws):
                x = img.clone().requires_grad_(True)
                guide.sds_loss(x, emb, cams.azimuth, cams.elevation, args.t, generator=torch.Generator().manual_seed(r)).loss.backward()
                update -= x.grad / args.draws
            body = update[:, :, res * 3 // 8: res * 5 // 8, res * 3 // 16: res * 5 // 16]
            print(f"elevation {elev:5.1f} {name:5s}: centre brightness {img[:, :, c, c].mean():.3f}, mean update centre "
                  f"{update[:, :, c, c].mean():+.4f}, body {body.mean():+.4f}", flush=True)
            rows.append(torch.cat([torch.cat(list(img), 2), torch.cat(list((0.5 + 20 * update).clamp(0, 1)), 2)], 1))
    grid = torch.cat(rows, 1)
    Image.fromarray((grid.permute(1, 2, 0) * 255).byte().numpy()).save(args.out)
    print(f"renders and updates (x20 around grey): {args.out}")


if __name__ == "__main__":
    main()
