#!/usr/bin/env python
"""Render the prior's training data.

The latent prior's world (default): primitives, composite objects and two-object scenes at 128 px, in
shards (resumable: finished shards are skipped, each is written atomically):

    nice -n 19 python scripts/prior_dataset.py --out work_prior/data --train-shards 40 --heldout-shards 2 --workers 2
writes train-NNNNN.npz, heldout_a-NNNNN.npz (trains the evaluation classifier), heldout_b-NNNNN.npz
(checks it) and meshes/<class>.npz (ground-truth meshes), and prints the measured ms per image.

The pixel-space 32 px prior's data (coloured primitives only), as before:

    python scripts/prior_dataset.py --pixel32 --out data/prior --train 30000 --heldout 3000
(--train or --heldout alone imply --pixel32, so the earlier command keeps its meaning.)
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _work(job):
    import torch

    from meshdream.prior.shards import make_shard

    torch.set_num_threads(1)
    folder, split, index, size, resolution = job
    return split, index, size, make_shard(folder, split, index, size, resolution)


def world_dataset(args) -> None:
    from meshdream.prior.shards import write_meshes

    os.makedirs(args.out, exist_ok=True)
    jobs = [(args.out, split, i, args.shard_size, args.resolution)
            for split, n in (("train", args.train_shards), ("heldout_a", args.heldout_shards), ("heldout_b", args.heldout_shards))
            for i in range(n)]
    t0, done_images, busy = time.time(), 0, 0.0
    if args.workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(args.workers)
        results = pool.imap(_work, jobs)
    else:
        results = map(_work, jobs)
    for split, index, size, seconds in results:
        if seconds:
            done_images += size
            busy += seconds
            print(f"{split}-{index:05d}: {size} images, {seconds / size * 1000:.0f} ms/image (one thread); "
                  f"{(time.time() - t0) / done_images * 1000:.0f} ms/image wall over {args.workers} worker(s)", flush=True)
        else:
            print(f"{split}-{index:05d}: already there", flush=True)
    write_meshes(args.out)
    print(f"ground-truth meshes in {os.path.join(args.out, 'meshes')}", flush=True)


def pixel32_dataset(args) -> None:
    from meshdream.prior.primitives import render_dataset

    os.makedirs(args.out, exist_ok=True)
    for name, n, seed in (("train", args.train, 1), ("heldout_a", args.heldout, 2), ("heldout_b", args.heldout, 3)):
        t = time.time()
        images, captions, shapes, colours = render_dataset(n, seed=seed, resolution=args.resolution or 32)
        np.savez(os.path.join(args.out, f"{name}.npz"), images=images, captions=np.array(captions),
                 shapes=np.array(shapes), colours=np.array(colours))
        print(f"{name}: {n} images in {time.time() - t:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="folder (default work_prior/data; data/prior with --pixel32)")
    ap.add_argument("--resolution", type=int, default=None, help="image size (default 128; 32 with --pixel32)")
    ap.add_argument("--train-shards", type=int, default=40)
    ap.add_argument("--heldout-shards", type=int, default=2, help="shards of each held-out split")
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=1, help="processes (one thread each)")
    ap.add_argument("--pixel32", action="store_true", help="the pixel-space prior's primitive data set instead")
    ap.add_argument("--train", type=int, default=None, help="--pixel32 (implied): training images (default 30000)")
    ap.add_argument("--heldout", type=int, default=None, help="--pixel32 (implied): images of each held-out split (default 3000)")
    args = ap.parse_args()
    if args.pixel32 or args.train is not None or args.heldout is not None:  # the pixel prior's documented command
        args.train = 30000 if args.train is None else args.train
        args.heldout = 3000 if args.heldout is None else args.heldout
        args.out = args.out or "data/prior"
        return pixel32_dataset(args)
    args.out = args.out or "work_prior/data"
    args.resolution = args.resolution or 128
    for name in ("resolution", "train_shards", "heldout_shards", "shard_size", "workers"):
        if getattr(args, name) < (16 if name == "resolution" else 0 if name.endswith("shards") else 1):
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)} is too small")
    world_dataset(args)


if __name__ == "__main__":
    main()
