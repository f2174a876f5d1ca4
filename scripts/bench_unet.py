#!/usr/bin/env python
"""The embedded prior's UNet call: eager diffusers vs our TorchScript trace (guidance/traced_unet.py), in one process.

    python scripts/bench_unet.py [--threads 2] [--calls 40] [--batch 2] [--inference-options]

Same inputs as one coarse SDS step (batch = [uncond; cond] x views); prints wall and CPU ms per call for
each, alternating rounds so load changes hit both, and the ratio of the medians. Checks outputs are equal.

``--inference-options`` adds what PyTorch documents for CPU inference, applied to the trace: torch.jit.freeze,
channels_last weights and input, torch.jit.optimize_for_inference (oneDNN layouts), bf16 weights (the CPU has
or emulates bf16), and the batch's two halves on two threads at one intra-op thread each (``--threads`` is
ignored for that row); each row with its largest difference from the trace's output.
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
    ap.add_argument("--inference-options", action="store_true", help="also freeze, channels_last, optimize_for_inference, bf16, halves")
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
    if args.inference_options:
        calls.update(inference_options(unet, x, t, ctx, args.threads))
    with torch.no_grad():
        assert torch.equal(calls["eager"](), calls["traced"]()), "traced output differs from eager"
        ref = calls["traced"]()
        diff = {name: float((fn().float() - ref).abs().max()) for name, fn in calls.items()}
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
    print(f"| call | wall ms | CPU ms | max abs diff vs traced (outputs up to {float(ref.abs().max()):.2f}) |\n|---|---|---|---|")
    for name in calls:
        print(f"| {name} | {statistics.median(wall[name]):.1f} | {statistics.median(cpu[name]):.1f} | {diff[name]:.2g} |")
    print(f"speed-up (eager / traced): wall {statistics.median(wall['eager']) / statistics.median(wall['traced']):.2f}x, "
          f"CPU {statistics.median(cpu['eager']) / statistics.median(cpu['traced']):.2f}x")


def inference_options(unet, x, t, ctx, threads: int) -> dict:
    """name -> call for the CPU inference variants (see the module docstring)."""
    import copy
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from meshdream.guidance.traced_unet import _EpsOnly

    def trace(module, *inputs):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(_EpsOnly(module).eval(), inputs, check_trace=False)

    frozen = torch.jit.freeze(trace(unet, x, t, ctx).eval())
    last = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    traced_last = trace(last, x_last, t, ctx)
    optimized = torch.jit.optimize_for_inference(trace(unet, x, t, ctx).eval())
    x16, ctx16 = x.bfloat16(), ctx.bfloat16()
    traced16 = trace(copy.deepcopy(unet).bfloat16(), x16, t, ctx16)
    halves_trace = trace(unet, x[: len(x) // 2], t[: len(x) // 2], ctx[: len(x) // 2])
    # a worker thread with 1 OpenMP thread; the caller's own ICV is set to 1 around the call (per thread)
    pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
    h = len(x) // 2

    def halves():
        torch.set_num_threads(1)
        other = pool.submit(halves_trace, x[h:], t[h:], ctx[h:])
        out = torch.cat([halves_trace(x[:h], t[:h], ctx[:h]), other.result()])
        torch.set_num_threads(threads)
        return out

    return {"frozen": lambda: frozen(x, t, ctx), "channels_last": lambda: traced_last(x_last, t, ctx),
            "optimize_for_inference": lambda: optimized(x, t, ctx), "bf16 weights": lambda: traced16(x16, t, ctx16),
            "halves on 2 threads": halves}


if __name__ == "__main__":
    main()
