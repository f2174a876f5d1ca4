"""The world's data set on disk: numbered shards of rendered images, each written atomically.

folder/
  train-00000.npz ...      images uint8 [S, R, R, 3], captions [S], labels (see world.render_batch)
  heldout_a-00000.npz ...  trains the evaluation classifier
  heldout_b-00000.npz ...  checks it
  meshes/<class>.npz       ground-truth mesh of every single-object class (vertices, faces, colours)

Shard ``k`` of a split is drawn from seed ``SPLIT_SEEDS[split] * 1_000_003 + k`` alone, so shards can be
made in any order, by several processes, and a killed build resumes by skipping finished shards.
"""
from __future__ import annotations

import glob
import io
import os
import re
import time

import numpy as np

from ..atomic_files import atomic_write_bytes
from . import world

SPLIT_SEEDS = {"train": 1, "heldout_a": 2, "heldout_b": 3}


def shard_path(folder: str, split: str, index: int) -> str:
    return os.path.join(folder, f"{split}-{index:05d}.npz")


def shard_seed(split: str, index: int) -> int:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLIT_SEEDS)}")
    return SPLIT_SEEDS[split] * 1_000_003 + index


def save_npz(path: str, **arrays) -> None:
    """np.savez to ``path`` atomically (readers see no file or the whole file)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def make_shard(folder: str, split: str, index: int, size: int, resolution: int, chunk: int = 32) -> float:
    """Render shard ``index`` of ``split`` unless it exists; returns seconds spent (0 when skipped)."""
    path = shard_path(folder, split, index)
    if os.path.exists(path):
        return 0.0
    t = time.time()
    images, captions, labels = [], [], {k: [] for k in world.LABEL_FIELDS}
    seed = shard_seed(split, index)
    for c, start in enumerate(range(0, size, chunk)):
        img, cap, lab = world.render_batch(min(chunk, size - start), seed=seed * 1000 + c, resolution=resolution)
        images.append(img)
        captions += cap
        for k in labels:
            labels[k].append(lab[k])
    save_npz(path, images=np.concatenate(images), captions=np.array(captions),
             **{k: np.concatenate(v) for k, v in labels.items()})
    return time.time() - t


def list_shards(folder: str, split: str) -> list[str]:
    """Finished shards of ``split``, in index order."""
    pattern = re.compile(rf"{split}-(\d{{5}})\.npz$")
    return sorted(p for p in glob.glob(os.path.join(folder, f"{split}-*.npz")) if pattern.search(os.path.basename(p)))


def load_shards(paths: list[str], fields=("images", "captions")) -> dict[str, np.ndarray]:
    """Concatenate ``fields`` of the shards at ``paths``."""
    if not paths:
        raise FileNotFoundError("no data shards found; build them with scripts/prior_dataset.py")
    parts: dict[str, list] = {f: [] for f in fields}
    for p in paths:
        with np.load(p, allow_pickle=False) as d:
            for f in fields:
                parts[f].append(d[f])
    return {f: np.concatenate(v) for f, v in parts.items()}


def write_meshes(folder: str, resolution: int = 96) -> list[str]:
    """The ground-truth mesh of every single-object class into folder/meshes/ (skips existing files)."""
    out = []
    for name in world.CLASSES:
        if name.startswith("scene "):
            continue
        path = os.path.join(folder, "meshes", name.replace(" ", "_") + ".npz")
        if not os.path.exists(path):
            v, f, c = world.ground_truth_mesh(name, resolution)
            save_npz(path, vertices=v, faces=f, colours=c)
        out.append(path)
    return out
