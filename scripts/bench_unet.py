#!/usr/bin/env python
"""The embedded prior's UNet call: eager diffusers vs our TorchScript trace (guidance/traced_unet.py), in one process.

    python scripts/bench_unet.py [--threads 2] [--calls 40] [--batch 2]

Same inputs as one coarse SDS step (batch = [uncond; cond] x views); prints wall and CPU ms per call for
each, alternating rounds so load changes hit both, and the ratio of the medians. Checks outputs are equal.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from meshdream.guidance import load_guidance  # noqa: E402
from meshdream.guidance.traced_unet import TracedUNet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--calls", type=int, default=40, help="calls per round (default 40)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2, help="UNet batch (default 2: one view, uncond + cond)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    guide = load_guidance("embedded")
    unet = guide.unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, guide.resolution, guide.resolution, generator=g)
    t = torch.randint(20, 980, (args.batch,), generator=g)
    ctx = guide.encode_text(["a red cube"] * args.batch)
    traced = TracedUNet(unet)
    calls = {"eager": lambda: unet(x, t, encoder_hidden_states=ctx).sample, "traced": lambda: traced(x, t, ctx)}
    with torch.no_grad():
        assert torch.equal(calls["eager"](), calls["traced"]()), "traced output differs from eager"
        wall = {k: [] for k in calls}
        cpu = {k: [] for k in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                fn()
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(args.calls):
                    fn()
                wall[name].append((time.perf_counter() - w0) / args.calls * 1000)
                cpu[name].append((time.process_time() - c0) / args.calls * 1000)
    print(f"embedded prior UNet, batch {args.batch}, {guide.resolution} px, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.calls} calls (medians)")
    print("| call | wall ms | CPU ms |\n|---|---|---|")
    for name in calls:
        print(f"| {name} | {statistics.median(wall[name]):.1f} | {statistics.median(cpu[name]):.1f} |")
    print(f"speed-up (eager / traced): wall {statistics.median(wall['eager']) / statistics.median(wall['traced']):.2f}x, "
          f"CPU {statistics.median(cpu['eager']) / statistics.median(cpu['traced']):.2f}x")


if __name__ == "__main__":
    main()
