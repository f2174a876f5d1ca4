#!/usr/bin/env python
"""Are this checkout's kernels bit-identical to another build of meshdream._C? Both modules in one process.

    python scripts/compare_native.py BASELINE_SO [--seeds 3]

BASELINE_SO: a built _C*.so of the other version (e.g. a copy of main's meshdream/_C.cpython-*.so). Every kernel of
both modules (rasterize, interpolate, texture in every filter / boundary mode, antialias, their backward passes, the
hash grid and MLP forward and backward, marching cubes) runs on the same valid random inputs, float32 and float64;
outputs and gradients are compared byte for byte (NaN equal to NaN). Prints one line per kernel; exit status 1 on any
difference.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not

from meshdream import _C as new  # noqa: E402


def load(path: str):
    spec = importlib.util.spec_from_file_location("meshdream_baseline._C", path)  # PyInit__C, as any build
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scene(rng, dt, B=2, V=80, F=60, res=(40, 48)):
    pos = rng.normal(size=(B, V, 4)).astype(dt)
    pos[..., 3] = np.abs(pos[..., 3]) + 1.2
    pos[..., 2] *= 0.3
    pos[:, :3, 3] = -0.5  # a few vertices behind the camera
    tri = rng.integers(0, V, (F, 3)).astype(np.int32)
    return pos, tri, res


def cases(rng, dt):
    """(kernel name, args) pairs of valid inputs for one seed and dtype."""
    s = "f64" if dt == np.float64 else "f32"
    pos, tri, (H, W) = scene(rng, dt)
    rast = new.__dict__[f"rasterize_fwd_{s}"](pos, tri, H, W)
    B, V, C = pos.shape[0], pos.shape[1], 5
    out = [(f"rasterize_fwd_{s}", (pos, tri, H, W)),
           (f"rasterize_bwd_{s}", (pos, tri, rast, rng.normal(size=rast.shape).astype(dt)))]
    for AB in (1, B):
        attr = rng.normal(size=(AB, V, C)).astype(dt)
        out += [(f"interpolate_fwd_{s}", (attr, rast, tri)),
                (f"interpolate_bwd_{s}", (attr, rast, tri, rng.normal(size=(B, H, W, C)).astype(dt)))]
    uv = (rng.uniform(-0.4, 1.4, (B, H, W, 2))).astype(dt)
    for TB in (1, B):
        tex = rng.uniform(size=(TB, 9, 7, 3)).astype(dt)
        for filt in (0, 1):
            for boundary in (0, 1, 2):
                out += [(f"texture_fwd_{s}", (tex, uv, filt, boundary)),
                        (f"texture_bwd_{s}", (tex, uv, rng.normal(size=(B, H, W, 3)).astype(dt), filt, boundary))]
    color = rng.uniform(size=(B, H, W, 3)).astype(dt)
    out += [(f"antialias_fwd_{s}", (color, rast, pos, tri)),
            (f"antialias_bwd_{s}", (color, rast, pos, tri, rng.normal(size=color.shape).astype(dt)))]
    # hash grid: 2 dense and 2 hashed levels, some points outside the bound
    res, sizes = [4, 8, 24, 40], [125, 729, 2048, 2048]
    offsets = list(np.cumsum([0] + sizes[:-1]).tolist())
    dense = [True, True, False, False]
    x = rng.uniform(-1.2, 1.2, (500, 3)).astype(dt)
    table = rng.normal(size=(sum(sizes), 2)).astype(dt)
    levels = (res, offsets, sizes, dense)
    out += [(f"hash_grid_fwd_{s}", (x, table, *levels, 1.0)),
            (f"hash_grid_bwd_{s}", (x, table, rng.normal(size=(500, 8)).astype(dt), *levels, 1.0, True, True))]
    dims = [8, 64, 64, 4]
    ws = [rng.normal(size=(dims[i + 1], dims[i])).astype(dt) * 0.3 for i in range(3)]
    bs = [rng.normal(size=dims[i + 1]).astype(dt) * 0.1 for i in range(3)]
    xm = rng.normal(size=(2500, 8)).astype(dt)
    out += [(f"mlp_fwd_{s}", (xm, ws, bs)), (f"mlp_bwd_{s}", (xm, ws, bs, rng.normal(size=(2500, 4)).astype(dt), True))]
    if dt == np.float32:
        g = np.linspace(-1, 1, 23)
        X, Y, Z = np.meshgrid(g, g, g, indexing="ij")
        vol = (0.7 - np.sqrt(X * X + Y * Y + Z * Z) + 0.1 * rng.normal(size=X.shape)).astype(np.float32)
        out += [("marching_cubes", (vol, 0.0, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)))]
    return out


def flatten(result):
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in flatten(r)]
    return [] if result is None else [np.asarray(result)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
                                    for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("baseline", help="path of the other build's _C*.so")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    old = load(args.baseline)
    counts, bad = {}, []
    for seed in range(args.seeds):
        for dt in (np.float32, np.float64):
            for name, call_args in cases(np.random.default_rng(seed), dt):
                a = flatten(getattr(old, name)(*call_args))
                b = flatten(getattr(new, name)(*call_args))
                counts[name] = counts.get(name, 0) + 1
                if not same(a, b):
                    bad.append(f"{name} (seed {seed})")
    for name, n in counts.items():
        print(f"{name:<20} {n:>3} calls  {'DIFFERENT' if any(b.startswith(name + ' ') for b in bad) else 'bit-identical'}")
    print(f"{sum(counts.values())} calls, {len(bad)} different: {', '.join(bad) or 'none'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
