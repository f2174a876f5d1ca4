#!/usr/bin/env python
"""Profile one ``meshdream generate`` run with cProfile and print where the time goes.

    python scripts/profile_generate.py "a red cube" --out runs/profile [--coarse-iters 100] [--refine-iters 50]
        [--reference-encoding] [--stats runs/profile.pstats] [--top 30]

Prints the wall and CPU time of each stage (coarse, refine, export, turntable) and the functions with
the most cumulative and own time. The profile counts process CPU time (all threads), not wall time, so
that it means the same on a busy shared machine. ``--reference-encoding`` runs the PyTorch hash-grid encoding instead of the
C++ kernel (the "before" of the kernel), everything else unchanged.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--coarse-iters", type=int, default=None)
    ap.add_argument("--refine-iters", type=int, default=None)
    ap.add_argument("--reference-encoding", action="store_true")
    ap.add_argument("--stats", default=None, help="also write the raw pstats here")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()

    import meshdream.nerf.hash_grid as hash_grid
    from meshdream.pipeline import coarse, export, generate, refine

    if args.reference_encoding:
        hash_grid._use_kernel = lambda x, table: False

    # stage wall times: wrap the stage functions generate calls
    stage_times: dict[str, tuple[float, float]] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                wall, cpu = stage_times.get(name, (0.0, 0.0))
                stage_times[name] = (wall + time.perf_counter() - t, cpu + time.process_time() - c)
        return wrapper

    import meshdream.turntable as turntable

    generate.coarse = timed("coarse", coarse.coarse)
    generate.refine = timed("refine", refine.refine)
    generate.export = timed("export", export.export)
    turntable.turntable_of_run = timed("turntable", turntable.turntable_of_run)

    shutil.rmtree(args.out, ignore_errors=True)
    profiler = cProfile.Profile(time.process_time)
    t, c = time.perf_counter(), time.process_time()
    profiler.enable()
    generate.generate(args.prompt, args.out, coarse_iters=args.coarse_iters, refine_iters=args.refine_iters, progress=False)
    profiler.disable()
    total, cpu = time.perf_counter() - t, time.process_time() - c
    print(f"encoding: {'PyTorch reference' if args.reference_encoding else 'C++ kernel'}; "
          f"total {total:.1f} s wall, {cpu:.1f} s CPU (all threads)")
    for name, (wall, cpu) in stage_times.items():
        print(f"  {name:10s} {wall:7.1f} s wall {cpu:7.1f} s CPU")
    stats = pstats.Stats(profiler)
    if args.stats:
        stats.dump_stats(args.stats)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
