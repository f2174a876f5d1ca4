#!/usr/bin/env python
"""Marching cubes: scikit-image, PyMCubes and meshdream on the same grids, in one process.

    python scripts/bench_marching_cubes.py [--sizes 128 256 512] [--repeats 3]
Prints the best-of-N time of each and ours' speed-up over each baseline.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

# import meshdream from this checkout, not whatever an editable install elsewhere points at
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def field(n: int) -> np.ndarray:
    """A sphere with a bumpy surface (a NeRF-like, non-trivial level set)."""
    x = np.linspace(-1, 1, n, dtype=np.float32)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return (0.7 - np.sqrt(X ** 2 + Y ** 2 + Z ** 2) + 0.05 * np.sin(10 * X) * np.sin(10 * Y) * np.sin(10 * Z)).astype(np.float32)


def best_interleaved(fns: dict, repeats: int) -> dict:
    """Best-of-N time of each function, run in turns so that load from other processes hits all alike."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import mcubes
    from skimage.measure import marching_cubes as sk_mc

    from meshdream import _C
    from meshdream.mesh import marching_cubes

    print(f"meshdream._C {_C.__file__} openmp={_C.openmp} threads={_C.max_threads()}")
    print(f"{'grid':>6} {'faces':>9} {'skimage s':>10} {'pymcubes s':>11} {'ours s':>8} {'vs skimage':>11} {'vs pymcubes':>12}")
    for n in args.sizes:
        vol = field(n)
        _, faces = marching_cubes(vol, 0.0)  # warm-up
        t = best_interleaved({
            "ours": lambda: marching_cubes(vol, 0.0),
            "skimage": lambda: sk_mc(vol, 0.0),
            "pymcubes": lambda: mcubes.marching_cubes(vol, 0.0),
        }, args.repeats)
        t_ours, t_sk, t_mc = t["ours"], t["skimage"], t["pymcubes"]
        print(f"{n:>5}^3 {len(faces):>9} {t_sk:>10.3f} {t_mc:>11.3f} {t_ours:>8.3f} {t_sk / t_ours:>10.1f}x {t_mc / t_ours:>11.1f}x")


if __name__ == "__main__":
    main()
