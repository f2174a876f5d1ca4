"""Train the latent prior in three resumable stages, like Stable Diffusion:

1. ``vae``: AutoencoderKL on the world's renders (L1 + L2 reconstruction + a small KL), AdamW;
   at its end the latent scaling factor (1 / std of the latents, SD's 0.18215) is measured.
2. ``latents``: every training image encoded once (posterior mean and std, fp16) into work/latents/.
3. ``unet``: UNet2DConditionModel + CLIPTextModel on the cached latents (epsilon prediction, SD's
   schedule, classifier-free dropout), AdamW, EMA of both.

Both training stages run under bf16 autocast on the CPU (fp32 master weights), draw every random
number from one seeded generator, and write an atomic checkpoint every few minutes
(work/vae.pt, work/unet.pt): rerunning the same command after a kill -9 continues from the last
checkpoint with bit-identical results. ``export`` writes the diffusers folder (EMA weights).
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.device import torch_threads
from ..engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..config import to_dict
from . import shards
from .latent import (LatentArchitecture, build_scheduler, build_text_encoder, build_unet, build_vae, build_world_tokenizer,
                     default_meta, encode_text, save_latent_prior)

STAGES = ("vae", "latents", "unet")


@dataclass
class LatentTrainConfig:
    data: str = "work_prior/data"            # shards from scripts/prior_dataset.py
    work: str = "work_prior/latent"          # checkpoints, cached latents, loss logs
    export: str = "work_prior/export/latent-prior"
    init: str = ""                           # an exported prior folder to continue from: its VAE is kept (the vae
                                             # stage is skipped) and its EMA UNet + text encoder start the UNet stage
    arch: LatentArchitecture = field(default_factory=LatentArchitecture)
    vae_shards: int = 8                       # the VAE learns from the first shards (it needs far fewer images)
    train_shards: int = 40                    # the UNet waits until this many training shards exist
    vae_steps: int = 4000
    vae_batch: int = 16
    vae_lr: float = 5e-4
    kl_weight: float = 1e-5                   # per latent element, against the per-pixel L1 + L2
    unet_steps: int = 20000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 500
    weight_decay: float = 1e-2
    ema_decay: float = 0.9995
    cfg_dropout: float = 0.1                  # empty caption this often (classifier-free guidance)
    bf16: bool = True                         # autocast on the CPU (AVX-512 BF16); fp32 master weights
    checkpoint_minutes: float = 5.0
    checkpoint_every: int = 0                 # also every N steps (0: time only; tests use 1)
    log_every: int = 25
    seed: int = 0
    threads: int = 2
    wait_seconds: float = 60.0                # poll interval while shards are still being rendered


def _cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def _autocast(cfg: LatentTrainConfig):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)


def _wait_for_shards(cfg: LatentTrainConfig, n: int, log) -> list[str]:
    """The first ``n`` training shards, waiting while the data set is still being rendered."""
    said = None
    while True:
        paths = [shards.shard_path(cfg.data, "train", i) for i in range(n)]
        missing = [p for p in paths if not os.path.exists(p)]
        if not missing:
            return paths
        if len(missing) != said:  # one line per finished shard, not per poll
            log(f"waiting for {len(missing)} of {n} training shards in {cfg.data} (scripts/prior_dataset.py)")
            said = len(missing)
        time.sleep(cfg.wait_seconds)


class _Clock:
    """Checkpoint when ``minutes`` passed or every ``every`` steps."""

    def __init__(self, cfg: LatentTrainConfig):
        self.cfg, self.last = cfg, time.time()

    def due(self, step: int, last_step: int) -> bool:
        if step == last_step or (self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0) or \
                time.time() - self.last > 60 * self.cfg.checkpoint_minutes:
            self.last = time.time()
            return True
        return False


def _images(batch: np.ndarray) -> torch.Tensor:
    """uint8 [B, R, R, 3] -> [B, 3, R, R] in [-1, 1]."""
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _append_losses(cfg: LatentTrainConfig, stage: str, rows: list[tuple[int, float]]) -> None:
    with open(os.path.join(cfg.work, f"{stage}_loss.tsv"), "a") as f:
        for step, loss in rows:
            f.write(f"{step}\t{loss:.6f}\n")


def train_vae(cfg: LatentTrainConfig, log=print) -> None:
    path = os.path.join(cfg.work, "vae.pt")
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.arch)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if not os.path.exists(path) and cfg.init:
        _vae_from_folder(cfg, path, log)
    if os.path.exists(path):
        state = load_checkpoint(path)
        if state.get("done", False):
            return
        vae.load_state_dict(state["vae"]); opt.load_state_dict(state["optimizer"]); set_rng_state(state["rng"], g)
        step = state["step"]
        log(f"vae: resumed from {path} at step {step}")
    images = shards.load_shards(_wait_for_shards(cfg, cfg.vae_shards, log), ("images",))["images"]
    clock, pending, t0 = _Clock(cfg), [], time.time()
    while step < cfg.vae_steps:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.vae_steps, cfg.vae_lr, min(cfg.warmup, cfg.vae_steps // 10 + 1))
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=g)
        x = _images(images[idx.numpy()])
        with _autocast(cfg):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
            rec = vae.decode(z).sample.float()
        kl = 0.5 * (post.mean.float() ** 2 + post.var.float() - 1.0 - post.logvar.float()).mean()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        pending.append((step, loss.item()))
        if step % cfg.log_every == 0:
            recent = np.mean([v for _, v in pending[-cfg.log_every:]])
            log(f"vae step {step}/{cfg.vae_steps} loss {recent:.4f} kl {kl.item():.3f} {(time.time() - t0) / cfg.log_every:.2f}s/step")
            t0 = time.time()
        if clock.due(step, cfg.vae_steps):
            if step == cfg.vae_steps:  # SD's scaling factor: latents of unit variance for the UNet
                vae.register_to_config(scaling_factor=_latent_scale(vae, images, cfg))
                log(f"vae: scaling factor {vae.config.scaling_factor:.4f}")
            _append_losses(cfg, "vae", pending)
            pending = []
            save_checkpoint(path, {"step": step, "vae": vae.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(g),
                                   "scaling_factor": float(vae.config.scaling_factor), "done": step == cfg.vae_steps,
                                   "config": to_dict(cfg)})


def _vae_from_folder(cfg: LatentTrainConfig, path: str, log) -> None:
    """work/vae.pt, finished, from the exported folder ``cfg.init`` (its weights and scaling factor)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(os.path.join(cfg.init, "vae"))
    save_checkpoint(path, {"step": cfg.vae_steps, "vae": vae.state_dict(), "optimizer": None, "rng": None,
                           "scaling_factor": float(vae.config.scaling_factor), "done": True, "config": to_dict(cfg)})
    log(f"vae: taken from {cfg.init}")


@torch.no_grad()
def _latent_scale(vae, images: np.ndarray, cfg: LatentTrainConfig, n: int = 256) -> float:
    stds = []
    for i in range(0, min(n, len(images)), 32):
        with _autocast(cfg):
            stds.append(vae.encode(_images(images[i:i + 32])).latent_dist.mean.float())
    return float(1.0 / torch.cat(stds).std())


def load_vae(cfg: LatentTrainConfig):
    state = load_checkpoint(os.path.join(cfg.work, "vae.pt"))
    if not state.get("done"):
        raise RuntimeError(f"the VAE in {cfg.work} has not finished training (step {state['step']} of {cfg.vae_steps})")
    vae = build_vae(cfg.arch)
    vae.load_state_dict(state["vae"])
    vae.register_to_config(scaling_factor=state["scaling_factor"])
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def cache_latents(cfg: LatentTrainConfig, log=print) -> None:
    """Encode each training shard once: work/latents/train-NNNNN.npz with mean, std [S, 4, h, w] (fp16)
    and the captions (one file per shard, atomic, skipped when present)."""
    out = os.path.join(cfg.work, "latents")
    os.makedirs(out, exist_ok=True)
    vae = None
    for path in _wait_for_shards(cfg, cfg.train_shards, log):
        target = os.path.join(out, os.path.basename(path))
        if os.path.exists(target):
            continue
        vae = vae or load_vae(cfg)
        with np.load(path) as d:
            images, captions = d["images"], d["captions"]
        means, stds = [], []
        for i in range(0, len(images), 32):
            with _autocast(cfg):
                post = vae.encode(_images(images[i:i + 32])).latent_dist
            means.append(post.mean.float().half())
            stds.append(post.std.float().half())
        shards.save_npz(target, mean=torch.cat(means).numpy(), std=torch.cat(stds).numpy(), captions=captions)
        log(f"latents: {os.path.basename(path)} encoded")


def _load_latents(cfg: LatentTrainConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    paths = [os.path.join(cfg.work, "latents", os.path.basename(shards.shard_path(cfg.data, "train", i))) for i in range(cfg.train_shards)]
    data = shards.load_shards(paths, ("mean", "std", "captions"))
    return torch.from_numpy(data["mean"]), torch.from_numpy(data["std"]), [str(c) for c in data["captions"]]


def _unet_models(cfg: LatentTrainConfig):
    tokenizer = build_world_tokenizer()
    torch.manual_seed(cfg.seed + 1)
    unet, text = build_unet(cfg.arch), build_text_encoder(cfg.arch, len(tokenizer))
    return tokenizer, unet, text


def train_unet(cfg: LatentTrainConfig, log=print) -> None:
    path = os.path.join(cfg.work, "unet.pt")
    tokenizer, unet, text = _unet_models(cfg)
    scheduler = build_scheduler()
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text).requires_grad_(False)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    step = 0

    def save(step: int) -> None:
        save_checkpoint(path, {"step": step, "unet": unet.state_dict(), "text_encoder": text.state_dict(),
                               "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
                               "optimizer": opt.state_dict(), "rng": rng_state(g), "config": to_dict(cfg)})

    if os.path.exists(path):
        state = load_checkpoint(path)
        unet.load_state_dict(state["unet"]); text.load_state_dict(state["text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"]); ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["optimizer"]); set_rng_state(state["rng"], g)
        step = state["step"]
        log(f"unet: resumed from {path} at step {step}")
    elif cfg.init:  # a new schedule from the exported weights (the EMA becomes the live model too)
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet.load_state_dict(UNet2DConditionModel.from_pretrained(os.path.join(cfg.init, "unet")).state_dict())
        text.load_state_dict(CLIPTextModel.from_pretrained(os.path.join(cfg.init, "text_encoder")).state_dict())
        ema_unet.load_state_dict(unet.state_dict()); ema_text.load_state_dict(text.state_dict())
        log(f"unet: starting from {cfg.init}")
        save(0)  # from here on the run resumes without the folder
    if step >= cfg.unet_steps:
        return
    scale = float(load_checkpoint(os.path.join(cfg.work, "vae.pt"))["scaling_factor"])
    mean, std, captions = _load_latents(cfg)
    alphas = scheduler.alphas_cumprod
    clock, pending, t0 = _Clock(cfg), [], time.time()
    while step < cfg.unet_steps:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.unet_steps, cfg.lr, cfg.warmup)
        idx = torch.randint(0, len(mean), (cfg.batch_size,), generator=g)
        z0 = (mean[idx].float() + std[idx].float() * torch.randn(mean[idx].shape, generator=g)) * scale
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.cfg_dropout
        texts = ["" if d else captions[i] for d, i in zip(drop.tolist(), idx.tolist())]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with _autocast(cfg):
            pred = unet(zt, t, encode_text(tokenizer, text, texts)).sample.float()
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            for ema, live in ((ema_unet, unet), (ema_text, text)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - d)
        step += 1
        pending.append((step, loss.item()))
        if step % cfg.log_every == 0:
            recent = np.mean([v for _, v in pending[-cfg.log_every:]])
            log(f"unet step {step}/{cfg.unet_steps} loss {recent:.4f} lr {_cosine_lr(step, cfg.unet_steps, cfg.lr, cfg.warmup):.2e} "
                f"{(time.time() - t0) / cfg.log_every:.2f}s/step")
            t0 = time.time()
        if clock.due(step, cfg.unet_steps):
            _append_losses(cfg, "unet", pending)
            pending = []
            save(step)


def train(cfg: LatentTrainConfig, stages: Tuple[str, ...] = STAGES, log=print) -> None:
    """Run ``stages`` in order (each skips what is already done)."""
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stage(s) {', '.join(bad)}; stages: {', '.join(STAGES)}")
    os.makedirs(cfg.work, exist_ok=True)
    with torch_threads(cfg.threads):
        for stage in stages:
            {"vae": train_vae, "latents": cache_latents, "unet": train_unet}[stage](cfg, log)


def loss_curve(cfg: LatentTrainConfig, stage: str, every: int = 500) -> list[tuple[int, float]]:
    """(step, mean loss of the ``every`` steps up to it) from work/<stage>_loss.tsv."""
    path = os.path.join(cfg.work, f"{stage}_loss.tsv")
    if not os.path.exists(path):
        return []
    rows = np.loadtxt(path, ndmin=2)
    # a kill between a log append and its checkpoint repeats steps: the last value of a step wins
    last = {int(s): v for s, v in rows}
    steps = sorted(last)
    return [(s, float(np.mean([last[k] for k in steps if s - every < k <= s]))) for s in steps if s % every == 0]


def export(cfg: LatentTrainConfig, folder: str | None = None, log=print) -> str:
    """Write the diffusers folder from the checkpoints: the VAE and the EMA UNet + text encoder."""
    folder = folder or cfg.export
    vae = load_vae(cfg)
    state = load_checkpoint(os.path.join(cfg.work, "unet.pt"))
    tokenizer, unet, text = _unet_models(cfg)
    unet.load_state_dict(state["ema_unet"])
    text.load_state_dict(state["ema_text"])
    meta = default_meta(cfg.arch)
    curve = loss_curve(cfg, "unet", every=max(1, min(500, state["step"])))
    meta["training"] = {
        "unet_steps": state["step"], "unet_steps_planned": cfg.unet_steps, "vae_steps": cfg.vae_steps,
        "batch_size": cfg.batch_size, "ema_decay": cfg.ema_decay, "cfg_dropout": cfg.cfg_dropout, "bf16": cfg.bf16,
        "final_loss": round(curve[-1][1], 5) if curve else None, "train_shards": cfg.train_shards,
        "parameters": {"vae": sum(p.numel() for p in vae.parameters()), "unet": sum(p.numel() for p in unet.parameters()),
                       "text_encoder": sum(p.numel() for p in text.parameters())},
    }
    if cfg.init:  # the record of the weights this run continued
        with open(os.path.join(cfg.init, "meshdream_prior.json")) as f:
            meta["training"]["continued_from"] = json.load(f).get("training")
    save_latent_prior(folder, vae, unet, text, tokenizer, build_scheduler(), meta)
    log(f"exported the prior at unet step {state['step']} to {folder}")
    return folder
