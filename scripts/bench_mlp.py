#!/usr/bin/env python
"""The field's ReLU network: our fused C++ kernel (cpp/mlp.cpp) against torch.nn's layers, in one process.

    python scripts/bench_mlp.py [--points 14 16 18] [--threads 1 2] [--repeats 5]

The coarse stage's network (configs/coarse.yaml: 4 levels x 2 features -> 64 -> 64 -> 4). For 2^k points:
forward alone (no_grad, as the occupancy updates, pass 1 of the render and extraction run it), then
forward + backward to the parameters and the input features (as training does), best of N, alternating
the two implementations; prints a markdown table with the speed-ups. Outputs are checked to agree.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not

import torch

from meshdream.nerf.mlp import ReluMLP

DIMS = [8, 64, 64, 4]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, nargs="+", default=[14, 16, 18], help="log2 of the point counts")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    ours, ref = ReluMLP(DIMS, backend="cpp"), ReluMLP(DIMS, backend="reference")
    ref.load_state_dict(ours.state_dict())
    print(f"network {' -> '.join(map(str, DIMS))}\n")
    print("| threads | points | pass | torch.nn | meshdream | speed-up |")
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)  # the kernel follows torch's thread count
        for k in args.points:
            x = torch.randn(2 ** k, DIMS[0])
            grad_out = torch.randn(2 ** k, DIMS[-1])
            with torch.no_grad():
                assert torch.allclose(ours(x), ref(x), rtol=1e-4, atol=1e-5)
            for backward in (False, True):
                def run(mlp):
                    if backward:
                        mlp.zero_grad(set_to_none=True)
                        xi = x.detach().requires_grad_()
                        (mlp(xi) * grad_out).sum().backward()
                    else:
                        with torch.no_grad():
                            mlp(x)

                run(ref), run(ours)  # warm-up
                t_ref, t_ours = float("inf"), float("inf")
                for _ in range(args.repeats):  # alternating, so both see the same machine
                    t_ref = min(t_ref, timed(lambda: run(ref)))
                    t_ours = min(t_ours, timed(lambda: run(ours)))
                pass_ = "forward + backward" if backward else "forward"
                print(f"| {threads} | 2^{k} | {pass_} | {t_ref * 1e3:.2f} ms | {t_ours * 1e3:.2f} ms | {t_ref / t_ours:.1f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
