#!/usr/bin/env python
"""Costs of the latent prior's networks on this machine (random weights, median of --repeats):

    nice -n 10 python scripts/bench_prior_latent.py [--unet-blocks 32,64,128 64,128,128 ...]
- SDS: one classifier-free-guided UNet call (batch 2, fp32) and the VAE encoder forward + backward to
  a 128 px image (what every coarse / refine step adds);
- training: one AdamW step of the VAE (batch 16) and of the UNet + text encoder (batch 32 latents),
  fp32 and under bf16 autocast.
The load average is printed: the machine is shared, so compare numbers from one run only.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from meshdream.prior.latent import (LatentArchitecture, build_scheduler, build_text_encoder, build_unet,  # noqa: E402
                                    build_vae, build_world_tokenizer, encode_text, latent_size)


def timed(fn, repeats):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet-blocks", nargs="+", default=["32,64,128"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} threads")
    tok = build_world_tokenizer()
    base = LatentArchitecture()
    vae = build_vae(base)
    img = torch.rand(1, 3, base.resolution, base.resolution, requires_grad=True)

    def enc():
        vae.encode(img * 2 - 1).latent_dist.mean.sum().backward()

    print(f"VAE {tuple(base.vae_blocks)} ({sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M): encoder fwd+bwd at "
          f"{base.resolution} px {timed(enc, args.repeats) * 1000:.0f} ms")
    if not args.skip_training:
        opt = torch.optim.AdamW(vae.parameters(), 1e-4)
        x = torch.rand(16, 3, base.resolution, base.resolution) * 2 - 1
        for bf16 in (False, True):
            def vae_step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    post = vae.encode(x).latent_dist
                    rec = vae.decode(post.sample()).sample
                loss = F.l1_loss(rec.float(), x) + post.kl().mean() * 1e-6
                opt.zero_grad()
                loss.backward()
                opt.step()
            print(f"  VAE AdamW step, batch 16, {'bf16' if bf16 else 'fp32'}: {timed(vae_step, max(2, args.repeats // 2)):.2f} s")
    sched = build_scheduler()
    for spec in args.unet_blocks:
        arch = LatentArchitecture(unet_blocks=tuple(int(v) for v in spec.split(",")))
        unet, text = build_unet(arch), build_text_encoder(arch, len(tok))
        n = sum(p.numel() for p in unet.parameters()) / 1e6
        s = latent_size(arch)
        with torch.no_grad():
            ctx = encode_text(tok, text, ["", "a red cube, front view"])
            z = torch.randn(2, arch.latent_channels, s, s)
            t = torch.tensor([500, 500])
            call = timed(lambda: unet(z, t, encoder_hidden_states=ctx).sample, args.repeats * 2)
        print(f"UNet {spec} ({n:.2f} M, {s}x{s}x{arch.latent_channels}): one CFG call (batch 2) {call * 1000:.0f} ms")
        if args.skip_training:
            continue
        params = list(unet.parameters()) + list(text.parameters())
        opt = torch.optim.AdamW(params, 1e-4)
        zb = torch.randn(32, arch.latent_channels, s, s)
        tb = torch.randint(0, 1000, (32,))
        prompts = ["a red cube next to a blue sphere, front view"] * 32
        for bf16 in (False, True):
            def unet_step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    pred = unet(sched.add_noise(zb, torch.randn_like(zb), tb), tb, encode_text(tok, text, prompts)).sample
                loss = F.mse_loss(pred.float(), zb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            print(f"  UNet + text AdamW step, batch 32, {'bf16' if bf16 else 'fp32'}: {timed(unet_step, max(2, args.repeats // 2)):.2f} s")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
