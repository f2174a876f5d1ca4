"""Throughput of `meshdream batch` (prompts/hour), 1 vs 2 workers, and plain sequential `generate` as the baseline.

All three run the same prompts with the same short settings, back to back in this process:

  sequential   generate() for each prompt in this process, torch with all the cores' threads (no Ray)
  1 worker     meshdream.batch(workers=1, cpus_per_job=<cores>)
  N workers    meshdream.batch(workers=<cores>, cpus_per_job=1)

    python scripts/bench_batch.py --prompts 4 --coarse-iters 60 --refine-iters 30 --out runs/bench_batch

Each variant writes its own folder under --out (deleted first, so every run is measured from scratch).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout, not an installed copy

PROMPTS = ["a red cube", "a blue sphere", "a green torus", "a yellow cone", "a purple cylinder", "an orange sphere",
           "a red torus", "a green cube"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4, help="how many prompts (at most %d)" % len(PROMPTS))
    ap.add_argument("--coarse-iters", type=int, default=60)
    ap.add_argument("--refine-iters", type=int, default=30)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", default="runs/bench_batch")
    ap.add_argument("--skip-sequential", action="store_true")
    args = ap.parse_args()

    import torch

    import meshdream
    from meshdream.stages.generate import generate

    prompts = PROMPTS[: args.prompts]
    out = Path(args.out)
    rows = []

    def restarts(folder: Path) -> int:
        """Coarse restarts after a frame-filling collapse (each moves the seed on by one from the default 0)."""
        import yaml

        return sum(int(yaml.safe_load(p.read_text())["seed"]) for p in folder.glob("*/coarse/config.yaml"))

    def measure(name: str, fn) -> None:
        folder = out / name.replace(" ", "_")
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        fn(folder)
        seconds = time.perf_counter() - t
        rows.append((name, seconds, len(prompts) / seconds * 3600, restarts(folder)))
        print(f"{name}: {len(prompts)} prompts in {seconds:.1f} s = {rows[-1][2]:.1f} prompts/hour", flush=True)

    if not args.skip_sequential:
        def sequential(folder: Path) -> None:
            torch.set_num_threads(args.cores)
            for p in prompts:
                generate(p, folder / p.replace(" ", "-"), coarse_iters=args.coarse_iters, refine_iters=args.refine_iters,
                         progress=False)

        measure("sequential generate", sequential)
    for workers, cpus in ((1, args.cores), (args.cores, 1)):
        def batched(folder: Path, workers=workers, cpus=cpus) -> None:
            index = meshdream.batch(prompts, folder, workers=workers, cpus_per_job=cpus, coarse_iters=args.coarse_iters,
                                    refine_iters=args.refine_iters, progress=False)
            bad = [e["slug"] for e in index["jobs"] if e["status"] != "done"]
            if bad:
                raise SystemExit(f"failed prompts: {bad}")

        measure(f"batch {workers} worker(s) x {cpus} CPU", batched)

    print(f"\n{len(prompts)} prompts, coarse {args.coarse_iters} / refine {args.refine_iters} steps, {args.cores} cores\n")
    print("| run | wall | prompts/hour | coarse restarts |\n|---|---|---|---|")
    for name, seconds, rate, n in rows:
        print(f"| {name} | {seconds:.0f} s | {rate:.0f} | {n} |")


if __name__ == "__main__":
    main()
