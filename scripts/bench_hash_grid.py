#!/usr/bin/env python
"""Hash-grid encoding: our C++ kernel (cpp/hash_grid.cpp) against the PyTorch reference, in one process.

    python scripts/bench_hash_grid.py [--points 16 18 20] [--configs cpu gpu] [--repeats 3]

Configs: ``cpu`` is the coarse stage's default grid (configs/coarse.yaml: 4 levels, 16 -> 32, 2^15
rows per level), ``gpu`` the Stable Diffusion / IF presets' grid (16 levels, 16 -> 2048, 2^19 rows).
For 2^k points uniform in the box: forward alone, then forward + backward (to the table, as training
does), best of N; prints a markdown table with the speed-ups.
"""
from __future__ import annotations

import argparse
import time

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not

import torch

from meshdream.nerf.hash_grid import HashGrid, HashGridConfig

CONFIGS = {
    "cpu": HashGridConfig(levels=4, features_per_level=2, log2_table_size=15, base_resolution=16, max_resolution=32),
    "gpu": HashGridConfig(levels=16, features_per_level=2, log2_table_size=19, base_resolution=16, max_resolution=2048),
}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, nargs="+", default=[16, 18, 20], help="log2 of the point counts")
    ap.add_argument("--configs", nargs="+", default=["cpu", "gpu"], choices=sorted(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from meshdream import _C

    print(f"torch threads={torch.get_num_threads()} (the kernel follows torch's thread count; OpenMP built in: {_C.openmp})\n")
    print("| grid | points | pass | reference | meshdream | speed-up |")
    print("|---|---|---|---|---|---|")
    for name in args.configs:
        config = CONFIGS[name]
        torch.manual_seed(0)
        ours = HashGrid(config, backend="cpp")
        ref = HashGrid(config, backend="reference")
        ref.load_state_dict(ours.state_dict())
        label = f"{name}: {config.levels} levels, {config.base_resolution}->{config.max_resolution}, 2^{config.log2_table_size}"
        for k in args.points:
            x = torch.rand(2 ** k, 3) * 2 - 1
            grad_out = torch.randn(2 ** k, ours.output_dim)
            for backward in (False, True):
                def run(grid):
                    if backward:
                        grid.table.grad = None
                        (grid(x) * grad_out).sum().backward()
                    else:
                        with torch.no_grad():
                            grid(x)

                t_ref, t_ours = best(lambda: run(ref), args.repeats), best(lambda: run(ours), args.repeats)
                pass_ = "forward + backward" if backward else "forward"
                print(f"| {label} | 2^{k} | {pass_} | {t_ref:.3f} s | {t_ours:.3f} s | {t_ref / t_ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
