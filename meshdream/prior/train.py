"""Train the embedded prior: epsilon-prediction DDPM on the primitive renders, text-conditioned,
with classifier-free dropout and EMA weights. Resumable from atomic checkpoints."""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..config import to_dict
from .model import build_scheduler, build_text_encoder, build_tokenizer, build_unet, default_meta, encode_text, save_prior
from ..engine.device import torch_threads


@dataclass
class PriorTrainConfig:
    data: str = "data/prior/train.npz"        # from scripts/prior_dataset.py
    work: str = "work_prior"                  # checkpoints and logs
    export: str = "meshdream/guidance/embedded_prior"
    resolution: int = 32
    steps: int = 6000                         # length of the learning-rate schedule
    stop_at: int | None = None                # end (and export) here, mid-schedule; None = steps
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1                  # empty caption this often (classifier-free guidance)
    hflip: bool = True                        # mirror images: views keep their labels
    checkpoint_every: int = 100
    export_every: int = 250
    seed: int = 0
    threads: int = 2


def load_data(path: str) -> tuple[torch.Tensor, list[str]]:
    """Images as uint8 [N, R, R, 3] and their captions."""
    with np.load(path, allow_pickle=False) as d:
        return torch.from_numpy(d["images"]), [str(c) for c in d["captions"]]


def _lr(step: int, cfg: PriorTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def train(cfg: PriorTrainConfig, log=print) -> None:
    if cfg.steps < 1 or (cfg.stop_at is not None and cfg.stop_at < 1):
        raise ValueError(f"steps ({cfg.steps}) and stop_at ({cfg.stop_at}) must be at least 1 (stop_at may be None)")
    with torch_threads(cfg.threads):
        _train(cfg, log)


def _train(cfg: PriorTrainConfig, log) -> None:
    images, captions = load_data(cfg.data)
    tokenizer = build_tokenizer()
    torch.manual_seed(cfg.seed)  # the initial weights; every later draw comes from ``g``
    unet, text_encoder, scheduler = build_unet(cfg.resolution), build_text_encoder(len(tokenizer)), build_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    g = torch.Generator().manual_seed(cfg.seed)
    os.makedirs(cfg.work, exist_ok=True)
    ckpt_path = os.path.join(cfg.work, "checkpoint.pt")
    step, losses = 0, []
    if os.path.exists(ckpt_path):
        state = load_checkpoint(ckpt_path)
        unet.load_state_dict(state["unet"]); text_encoder.load_state_dict(state["text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"]); ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["optimizer"]); set_rng_state(state["rng"], g)
        step, losses = state["step"], state["losses"]
        log(f"resumed from {ckpt_path} at step {step}")
    alphas = scheduler.alphas_cumprod
    N = images.shape[0]
    t_start = time.time()
    last = cfg.steps if cfg.stop_at is None else min(cfg.stop_at, cfg.steps)
    while step < last:
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        idx = torch.randint(0, N, (cfg.batch_size,), generator=g)
        x0 = images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if cfg.hflip:
            flip = torch.rand(cfg.batch_size, generator=g) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.cfg_dropout
        texts = ["" if d else captions[i] for d, i in zip(drop.tolist(), idx.tolist())]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, encode_text(tokenizer, text_encoder, texts)).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))  # warm-up of the EMA
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - d)
        step += 1
        losses.append(loss.item())
        if step % 25 == 0:
            recent = sum(losses[-100:]) / len(losses[-100:])
            log(f"step {step}/{cfg.steps} loss {recent:.4f} lr {_lr(step, cfg):.2e} {(time.time() - t_start) / 25:.2f}s/step")
            t_start = time.time()
        if step % cfg.checkpoint_every == 0 or step == last:
            save_checkpoint(ckpt_path, {"step": step, "losses": losses, "unet": unet.state_dict(),
                                        "text_encoder": text_encoder.state_dict(), "ema_unet": ema_unet.state_dict(),
                                        "ema_text": ema_text.state_dict(), "optimizer": opt.state_dict(),
                                        "rng": rng_state(g), "config": to_dict(cfg)})
        if step % cfg.export_every == 0 or step == last:
            export(cfg, ema_unet, ema_text, tokenizer, scheduler, step, losses)


def export(cfg: PriorTrainConfig, unet, text_encoder, tokenizer, scheduler, step: int, losses: list[float]) -> None:
    """Write the EMA weights as the shipped prior, keeping the recommended settings.

    Any evaluation table (and samples.png) belongs to the weights it measured: the table is dropped
    here, so rerun scripts/prior_eval.py after the final export."""
    meta = default_meta(cfg.resolution)
    meta_path = os.path.join(cfg.export, "meshdream_prior.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
        meta["recommended"] = old.get("recommended", meta["recommended"])
    meta["training"] = {"steps": step, "batch_size": cfg.batch_size, "final_loss": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 5),
                        "ema_decay": cfg.ema_decay, "cfg_dropout": cfg.cfg_dropout, "data": os.path.basename(cfg.data),
                        "parameters_unet": sum(p.numel() for p in unet.parameters()),
                        "parameters_text_encoder": sum(p.numel() for p in text_encoder.parameters())}
    save_prior(cfg.export, unet, text_encoder, tokenizer, scheduler, meta)
