#!/usr/bin/env python
"""Train the embedded prior (resumable: rerun the same command after a kill).

The latent prior (VAE, then cached latents, then UNet + text encoder; see meshdream/prior/latent_train.py):

    nohup nice -n 19 python scripts/prior_train.py --latent --config configs/prior-latent.yaml >> work_prior/logs/train.log 2>&1 &
    python scripts/prior_train.py --latent --config configs/prior-latent.yaml --export [--to FOLDER]   # diffusers folder

The pixel-space 32 px prior:

    python scripts/prior_train.py --config configs/prior.yaml [--steps N]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from meshdream.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--steps", type=int, default=None, help="pixel prior: length of the schedule; latent prior: UNet steps")
    ap.add_argument("--latent", action="store_true", help="train the latent prior (VAE + UNet + text encoder)")
    ap.add_argument("--stages", default="vae,latents,unet", help="latent prior: stages to run, in order")
    ap.add_argument("--export", action="store_true", help="latent prior: write the diffusers folder from the checkpoints and stop")
    ap.add_argument("--to", default=None, help="latent prior: export folder (default: the config's export)")
    args = ap.parse_args()
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.latent:
        from meshdream.prior.latent_train import LatentTrainConfig, STAGES, export, train

        cfg = load_config(LatentTrainConfig, args.config, {"unet_steps": args.steps})
        if args.export:
            export(cfg, args.to, log=log)
            return
        stages = tuple(s for s in args.stages.split(",") if s)
        bad = [s for s in stages if s not in STAGES]
        if bad:
            ap.error(f"--stages: unknown stage(s) {', '.join(bad)}; stages: {', '.join(STAGES)}")
        train(cfg, stages, log=log)
        return
    from meshdream.prior.train import PriorTrainConfig, train as train_pixel

    cfg = load_config(PriorTrainConfig, args.config, {"steps": args.steps})
    train_pixel(cfg, log=log)


if __name__ == "__main__":
    main()
