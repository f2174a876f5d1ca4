#!/usr/bin/env python
"""Profile one ``meshdream generate`` run and print where the time goes.

    python scripts/profile_generate.py "a red cube" --out runs/profile [--coarse-iters 100] [--refine-iters 50]
        [--mode wall|torch|cprofile] [--threads N] [--reference-encoding] [--reference-mlp] [--no-video] [--stats runs/profile.pstats] [--top 30]

Always prints the wall (perf_counter) and CPU time of each stage and of its parts: imports, prior load
(+ UNet trace), coarse loop, extraction, refine set-up (decimation, xatlas, bake), refine loop, export,
GIF and MP4 turntables.

``--mode torch`` (torch.profiler, record_function ranges wrapped around the stage loop's parts from
outside: camera sampling, shading choice, render, SDS (and its UNet call), regularisers, backward,
optimizer step, occupancy update, collapse checks, previews, checkpoints) prints each part's share of
the coarse and refine loops and its ms per step. Prefer it to ``--mode cprofile``: cProfile charges its
per-call overhead to code that makes many small Python calls (the eager UNet), which inflates them.
Give ``--mode torch`` shorter runs (``--coarse-iters 200 --refine-iters 100``): a full-length run keeps ~15 GB of
profiler events and takes minutes to summarise them (measured).
``--mode cprofile`` prints the functions with the most cumulative and own process CPU time.
``--mode wall`` (default): stage times only, nothing else slows the run.
``--reference-encoding`` runs the PyTorch hash-grid encoding instead of the C++ kernel, ``--reference-mlp`` the
field's torch.nn layers instead of the fused MLP kernel (cpp/mlp.cpp).
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import pstats
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

T_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not

# wall, CPU seconds and calls per stage part (perf_counter; process CPU time of all threads)
STAGES: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])


def timed(name: str, fn):
    """fn, adding its wall and CPU time to STAGES[name]."""
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            entry = STAGES[name]
            entry[0] += time.perf_counter() - t
            entry[1] += time.process_time() - c
            entry[2] += 1
    return wrapper


class Ranges:
    """record_function ranges named 'STAGE/part' around the loop's parts. Parts do not nest (a preview's
    render counts as preview, not render) except those marked ``nested`` (the UNet inside SDS)."""

    def __init__(self):
        self.stage = "?"
        self.depth = 0

    def wrap(self, part: str, fn, nested: bool = False):
        import torch

        @functools.wraps(fn)
        def wrapper(*a, **k):
            if self.depth and not nested:
                return fn(*a, **k)
            self.depth += 1
            try:
                with torch.profiler.record_function(f"{self.stage}/{part}"):
                    return fn(*a, **k)
            finally:
                self.depth -= 1
        return wrapper


def install_ranges(ranges: Ranges) -> None:
    import torch

    import meshdream.engine.stage_loop as stage_loop
    from meshdream.guidance.traced_unet import TracedUNet
    from meshdream.nerf.volume_render import OccupancyGrid
    from meshdream.stages import coarse
    from meshdream.stages import refine

    for mod in (coarse, refine):
        for name, part in (("sample_cameras", "camera sampling"), ("shading_for_step", "shading choice"),
                           ("render_cameras", "render"), ("render_mesh", "render"), ("orientation_loss", "regularisers"),
                           ("sparsity_loss", "regularisers"), ("laplacian_loss", "regularisers"),
                           ("normal_consistency_loss", "regularisers"), ("quick_frame_check", "collapse check"),
                           ("save_checked_preview", "preview")):
            if hasattr(mod, name):
                setattr(mod, name, ranges.wrap(part, getattr(mod, name)))

    def guided(load):
        def load_guidance(*a, **k):
            guide = load(*a, **k)
            guide.sds_loss = ranges.wrap("SDS", guide.sds_loss)
            return guide
        return load_guidance

    coarse.load_guidance = guided(coarse.load_guidance)
    refine.load_guidance = guided(refine.load_guidance)
    TracedUNet.__call__ = ranges.wrap("SDS: UNet (inside SDS)", TracedUNet.__call__, nested=True)
    OccupancyGrid.update = ranges.wrap("occupancy update", OccupancyGrid.update)
    torch.Tensor.backward = ranges.wrap("backward", torch.Tensor.backward)
    torch.optim.Adam.step = ranges.wrap("optimizer step", torch.optim.Adam.step)
    torch.optim.Optimizer.zero_grad = ranges.wrap("optimizer step", torch.optim.Optimizer.zero_grad)
    stage_loop.StageLoop.checkpoint = ranges.wrap("checkpoint", stage_loop.StageLoop.checkpoint)

    run = stage_loop.StageLoop.run

    def loop_run(self, compute_loss, optimizer, preview, after_step=None):
        ranges.stage = self.name
        wrapped_after = None if after_step is None else ranges.wrap("after step (collapse check)", after_step)
        with torch.profiler.record_function(f"{self.name}/LOOP"):
            return run(self, compute_loss, optimizer, ranges.wrap("preview", preview), wrapped_after)

    stage_loop.StageLoop.run = loop_run


def print_ranges(prof, steps: dict[str, int]) -> None:
    totals: dict[str, tuple[float, int]] = {}
    for evt in prof.key_averages():
        if "/" in evt.key and evt.key.split("/")[0] in ("coarse", "refine"):
            totals[evt.key] = (evt.cpu_time_total / 1e6, evt.count)
    for stage in ("coarse", "refine"):
        loop, _ = totals.get(f"{stage}/LOOP", (0.0, 0))
        if not loop:
            continue
        n = max(1, steps.get(stage, 1))
        print(f"\n{stage} loop: {loop:.2f} s in the profiler over {n} steps = {1000 * loop / n:.1f} ms/step")
        print(f"  {'part':34s} {'s':>7s} {'share':>6s} {'ms/step':>8s} {'calls':>6s}")
        covered = 0.0
        parts = sorted(((k, v) for k, v in totals.items() if k.startswith(stage + "/") and not k.endswith("/LOOP")),
                       key=lambda kv: -kv[1][0])
        for key, (sec, count) in parts:
            part = key.split("/", 1)[1]
            if "inside" not in part:
                covered += sec
            print(f"  {part:34s} {sec:7.2f} {sec / loop:6.1%} {1000 * sec / n:8.2f} {count:6d}")
        rest = loop - covered
        print(f"  {'(rest: loop bookkeeping, progress)':34s} {rest:7.2f} {rest / loop:6.1%} {1000 * rest / n:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--coarse-iters", type=int, default=None)
    ap.add_argument("--refine-iters", type=int, default=None)
    ap.add_argument("--mode", choices=("wall", "torch", "cprofile"), default="wall")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's). 1 gives CPU times that hold up on a busy machine (no spinning)")
    ap.add_argument("--no-video", action="store_true", help="skip the mp4 turntable (as generate --no-video)")
    ap.add_argument("--reference-encoding", action="store_true")
    ap.add_argument("--reference-mlp", action="store_true")
    ap.add_argument("--stats", default=None, help="cprofile: also write the raw pstats here")
    ap.add_argument("--top", type=int, default=30, help="rows of the cprofile tables and of --ops")
    ap.add_argument("--ops", action="store_true", help="torch: also print the aten ops with the most own CPU time")
    args = ap.parse_args()

    t_import, c_import = time.perf_counter(), time.process_time()
    import torch

    import meshdream.nerf.hash_grid as hash_grid
    import meshdream.engine.stage_loop as stage_loop
    import meshdream.stages.render as turntable
    from meshdream.guidance.traced_unet import TracedUNet
    from meshdream.stages import coarse
    from meshdream.stages import export
    from meshdream.stages import generate
    from meshdream.stages import refine
    if args.threads:
        torch.set_num_threads(args.threads)
    STAGES["imports (torch, meshdream)"] = [time.perf_counter() - t_import, time.process_time() - c_import, 1]

    if args.reference_encoding:
        hash_grid._use_kernel = lambda x, table: False
    if args.reference_mlp:
        import meshdream.nerf.mlp as mlp

        mlp._use_kernel = lambda x, params: False

    if args.mode == "torch":
        install_ranges(Ranges())
    # stage parts (wrapped after the ranges, so these times include the profiler's own cost)
    coarse.load_guidance = timed("prior load (both stages)", coarse.load_guidance)
    refine.load_guidance = timed("prior load (both stages)", refine.load_guidance)
    orig_trace = torch.jit.trace
    torch.jit.trace = timed("  UNet trace (inside the loops)", orig_trace)
    run = stage_loop.StageLoop.run
    steps: dict[str, int] = {}

    def loop_run(self, *a, **k):
        steps[self.name] = self.cfg.iters - self.start
        return timed(f"{self.name} loop", run)(self, *a, **k)

    stage_loop.StageLoop.run = loop_run
    coarse.extract_mesh = timed("coarse extraction", coarse.extract_mesh)
    refine._load_coarse = timed("refine set-up (decimate, xatlas, bake)", refine._load_coarse)
    generate.coarse = timed("COARSE (whole stage)", coarse.coarse)
    generate.refine = timed("REFINE (whole stage)", refine.refine)
    generate.export = timed("EXPORT", export.export)
    turntable.load_asset = timed("turntable: load asset", turntable.load_asset)
    turntable.gif_bytes = timed("turntable: GIF encode", turntable.gif_bytes)
    turntable.turntable_frames = timed("turntable: GIF frames", turntable.turntable_frames)
    turntable.mp4_bytes = timed("turntable: MP4 frames + encode", turntable.mp4_bytes)
    turntable.turntable_of_run = timed("TURNTABLE", turntable.turntable_of_run)
    del TracedUNet

    shutil.rmtree(args.out, ignore_errors=True)
    profiler = cProfile.Profile(time.process_time) if args.mode == "cprofile" else None
    tprof = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.mode == "torch"
             else contextlib.nullcontext())
    t, c = time.perf_counter(), time.process_time()
    with tprof:
        if profiler is not None:
            profiler.enable()
        generate.generate(args.prompt, args.out, coarse_iters=args.coarse_iters, refine_iters=args.refine_iters,
                          progress=False, video=not args.no_video)
        if profiler is not None:
            profiler.disable()
    total, cpu = time.perf_counter() - t, time.process_time() - c
    print(f"mode {args.mode}; encoding: {'PyTorch reference' if args.reference_encoding else 'C++ kernel'}; "
          f"MLP: {'torch.nn reference' if args.reference_mlp else 'C++ kernel'}; "
          f"torch threads {torch.get_num_threads()}; generate {total:.1f} s wall, {cpu:.1f} s CPU (all threads); "
          f"process start to end {time.perf_counter() - T_START:.1f} s")
    print(f"  {'stage / part':42s} {'wall s':>7s} {'CPU s':>7s} {'calls':>5s}")
    for name, (wall, cpu, calls) in STAGES.items():
        print(f"  {name:42s} {wall:7.2f} {cpu:7.2f} {calls:5d}")
    if args.mode == "torch":
        print_ranges(tprof, steps)
        if args.ops:
            print(tprof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    if profiler is not None:
        stats = pstats.Stats(profiler)
        if args.stats:
            stats.dump_stats(args.stats)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
