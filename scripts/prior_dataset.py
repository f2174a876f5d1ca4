#!/usr/bin/env python
"""Render the embedded prior's synthetic data set (coloured primitives on white, captioned by view).

    python scripts/prior_dataset.py --out data/prior --train 30000 --heldout 3000
writes train.npz (seed 1), heldout_a.npz (seed 2, trains the evaluation classifier) and heldout_b.npz
(seed 3, checks it).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from meshdream.prior.primitives import render_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/prior")
    ap.add_argument("--train", type=int, default=30000)
    ap.add_argument("--heldout", type=int, default=3000)
    ap.add_argument("--resolution", type=int, default=32)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, n, seed in (("train", args.train, 1), ("heldout_a", args.heldout, 2), ("heldout_b", args.heldout, 3)):
        t = time.time()
        images, captions, shapes, colours = render_dataset(n, seed=seed, resolution=args.resolution)
        np.savez(os.path.join(args.out, f"{name}.npz"), images=images, captions=np.array(captions),
                 shapes=np.array(shapes), colours=np.array(colours))
        print(f"{name}: {n} images in {time.time() - t:.1f}s")


if __name__ == "__main__":
    main()
