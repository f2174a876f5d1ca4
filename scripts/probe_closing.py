#!/usr/bin/env python
"""Topology of coarse meshes extracted again from saved fields with other closing radii: how many handles
(genus) the morphological closing of extraction (`extract.close_radius`) removes, and from which radius a
torus's hole shuts. Reads RUN/coarse/field.pt and RUN/coarse/config.yaml (its extraction settings), changes
only the radius; nothing in the run is written.

    python scripts/probe_closing.py RUN [RUN ...] [--radii 0 4 8 12 16] [--target-faces 0]

Prints one line per run and radius: components, watertight, genus, faces. Used for docs/design.md's "The coarse
field" (closing radius 12 voxels of the 128^3 grid).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's meshdream, installed or not


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="RUN folders with coarse/field.pt")
    ap.add_argument("--radii", nargs="+", type=int, default=[0, 4, 8, 12, 16], help="closing radii in voxels of the final grid")
    ap.add_argument("--target-faces", type=int, default=0, help="decimate to about this many faces (0: keep marching cubes' mesh)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from meshdream.asset.metrics import topology
    from meshdream.config import load_config
    from meshdream.nerf.extract import extract_mesh
    from meshdream.nerf.field import load_field
    from meshdream.stages.coarse import CoarseConfig

    torch.set_num_threads(1)
    for run in args.runs:
        field = load_field(run / "coarse" / "field.pt")
        extract = load_config(CoarseConfig, run / "coarse" / "config.yaml").extract
        for radius in args.radii:
            cfg = dataclasses.replace(extract, close_radius=radius, target_faces=args.target_faces)
            vertices, faces, _ = extract_mesh(field, cfg)
            t = topology(np.asarray(vertices), np.asarray(faces))
            print(f"{run}  close_radius {radius:3d}: components {t.components}, watertight {t.watertight}, "
                  f"genus {t.genus:g}, faces {t.faces}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
