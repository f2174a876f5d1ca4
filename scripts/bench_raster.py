#!/usr/bin/env python
"""CPU rasteriser: our C++ backend against the pure-PyTorch reference, in one process.

    python scripts/bench_raster.py [--triangles 10000 100000] [--resolutions 256 512] [--repeats 3]
    python scripts/bench_raster.py --against OTHER_C.so   # this build against another build of meshdream._C
For each mesh size and resolution: rasterize, interpolate, texture and antialias forward, then the
backward of the whole chain (to positions, attributes and texture), best of N, and the speed-up.
The reference has no antialias; its pipeline time leaves it out, so the ratio favours the reference.
With --against, the baseline is the same C++ pipeline through the other build's kernels (loaded into this
process; runs alternate between the two), and the ratio is baseline time / this build's time.
"""
import argparse
import time

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not

import torch

import meshdream.raster as dr
from meshdream.raster import reference


def sphere_mesh(n_tri: int):
    """A UV sphere with about n_tri triangles, radius 0.8, and its uvs."""
    rings = max(4, int((n_tri / 2) ** 0.5))
    seg = max(4, n_tri // (2 * rings))
    th = torch.linspace(0, torch.pi, rings + 1)
    ph = torch.linspace(0, 2 * torch.pi, seg + 1)
    T, P = torch.meshgrid(th, ph, indexing="ij")
    v = torch.stack([0.8 * T.sin() * P.cos(), 0.8 * T.cos(), 0.8 * T.sin() * P.sin()], -1).view(-1, 3)
    uv = torch.stack([P / (2 * torch.pi), 1 - T / torch.pi], -1).view(-1, 2)
    idx = torch.arange((rings + 1) * (seg + 1)).view(rings + 1, seg + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    tri = torch.cat([torch.stack([a, c, b], -1).view(-1, 3), torch.stack([b, c, d], -1).view(-1, 3)]).int()
    return v, uv, tri


def clip_positions(v: torch.Tensor) -> torch.Tensor:
    from meshdream.render.cameras import make_cameras

    cam = make_cameras(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([2.5]), torch.tensor([45.0]))
    hom = torch.cat([v, torch.ones(len(v), 1)], -1)
    return torch.einsum("bij,vj->bvi", cam.mvp(), hom).contiguous()


def load_kernels(path: str):
    """Another build of meshdream._C, as a module of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("meshdream_baseline._C", path)  # PyInit__C, as any build
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pipeline(impl: str, pos, tri, uv, tex, res, backward: bool):
    ctx = dr.get_context("cpu", "cpu" if impl in ("cpu", "baseline") else impl)
    if impl in ("cpu", "baseline"):
        rast, _ = dr.rasterize(ctx, pos, tri, (res, res))
        uvp, _ = dr.interpolate(uv[None], rast, tri, ctx=ctx)
        col = dr.texture(tex, uvp, filter_mode="linear", boundary_mode="wrap", ctx=ctx)
        col = dr.antialias(col, rast, pos, tri, ctx=ctx)
    else:
        rast = reference.rasterize(pos, tri, (res, res))
        uvp = reference.interpolate(uv[None], rast, tri)
        col = reference.texture(tex, uvp, "linear", "wrap")
    if backward:
        col.sum().backward()
    return col


def best(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triangles", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", metavar="OTHER_C_SO", help="compare with another build of meshdream._C instead of the reference")
    args = ap.parse_args()
    print(f"torch threads={torch.get_num_threads()}")
    if args.against:
        return against(args)
    print(f"{'tris':>7} {'res':>4} {'pass':>8} {'reference s':>12} {'ours s':>8} {'speed-up':>9}")
    for n in args.triangles:
        v, uv, tri = sphere_mesh(n)
        tex = torch.rand(1, 256, 256, 3)
        for res in args.resolutions:
            for backward in (False, True):
                def run(impl):
                    pos = clip_positions(v).requires_grad_(backward)
                    t = tex.clone().requires_grad_(backward)
                    with torch.set_grad_enabled(backward):
                        pipeline(impl, pos, tri, uv, t, res, backward)
                run("cpu")
                t_ours = best(lambda: run("cpu"), args.repeats)
                t_ref = best(lambda: run("reference"), args.repeats)
                name = "fwd+bwd" if backward else "forward"
                print(f"{len(tri):>7} {res:>4} {name:>8} {t_ref:>12.3f} {t_ours:>8.3f} {t_ref / t_ours:>8.1f}x")


def against(args):
    from meshdream.raster import cpu

    ours, baseline = cpu._C, load_kernels(args.against)
    print(f"baseline: {args.against}")
    print(f"{'tris':>7} {'res':>4} {'pass':>8} {'baseline s':>11} {'ours s':>8} {'ratio':>6}")
    ratios = []
    for n in args.triangles:
        v, uv, tri = sphere_mesh(n)
        tex = torch.rand(1, 256, 256, 3)
        for res in args.resolutions:
            for backward in (False, True):
                def run(kernels):
                    cpu._C = kernels
                    try:
                        pos = clip_positions(v).requires_grad_(backward)
                        t = tex.clone().requires_grad_(backward)
                        with torch.set_grad_enabled(backward):
                            pipeline("cpu", pos, tri, uv, t, res, backward)
                    finally:
                        cpu._C = ours
                run(ours), run(baseline)
                times = {id(ours): [], id(baseline): []}
                for _ in range(args.repeats):  # alternate, so load changes hit both alike
                    for kernels in (baseline, ours):
                        t0 = time.perf_counter()
                        run(kernels)
                        times[id(kernels)].append(time.perf_counter() - t0)
                t_base, t_ours = min(times[id(baseline)]), min(times[id(ours)])
                ratios.append(t_base / t_ours)
                name = "fwd+bwd" if backward else "forward"
                print(f"{len(tri):>7} {res:>4} {name:>8} {t_base:>11.3f} {t_ours:>8.3f} {t_base / t_ours:>5.3f}x")
    geo = 1.0
    for r in ratios:
        geo *= r
    print(f"geometric mean baseline / ours: {geo ** (1 / len(ratios)):.3f}x (above 1: this build is faster)")


if __name__ == "__main__":
    main()
