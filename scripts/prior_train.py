#!/usr/bin/env python
"""Train the embedded prior (resumable: rerun the same command after a kill).

    python scripts/prior_train.py --config configs/prior.yaml [--steps N]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from meshdream.config import load_config  # noqa: E402
from meshdream.prior.train import PriorTrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    cfg = load_config(PriorTrainConfig, args.config, {"steps": args.steps})
    train(cfg, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
