"""Small pieces every optimisation stage shares: device choice, finite-loss check, progress bar,
weight schedules and preview strips."""
from __future__ import annotations

import math
import os
from typing import Tuple

import numpy as np
import torch

from .errors import MeshdreamError


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from .errors import UserInputError

        raise UserInputError("device 'cuda' was asked for but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda"):
        from .errors import UserInputError

        raise UserInputError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return torch.device(device)


def check_finite(loss: torch.Tensor, step: int, stage: str) -> None:
    """Stop with a clear message instead of writing NaN parameters into the next checkpoint."""
    if not torch.isfinite(loss).all():
        raise MeshdreamError(
            f"{stage}: the loss became {float(loss.detach())} at step {step}; the last good checkpoint is kept. "
            "Try a lower learning rate or guidance scale (see configs/), then run again with --resume"
        )


def ramp(schedule: Tuple[float, float], progress: float) -> float:
    """Linear schedule from schedule[0] at progress 0 to schedule[1] at progress 1."""
    p = min(max(progress, 0.0), 1.0)
    return schedule[0] + (schedule[1] - schedule[0]) * p


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True, leave=True)


def save_strip(images: torch.Tensor, path: str | os.PathLike) -> None:
    """Save images [N, 3, H, W] in [0, 1] side by side as one PNG (written atomically)."""
    from io import BytesIO

    from PIL import Image

    from .checkpoint import atomic_write_bytes

    strip = torch.cat(list(images.detach().float().clamp(0, 1).cpu()), dim=-1)  # [3, H, N*W]
    arr = (strip.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def choose_shading(probabilities: dict, generator: torch.Generator) -> str:
    """Pick a shading mode with the given (unnormalised) probabilities, from ``generator``."""
    names = [k for k, v in probabilities.items() if v > 0]
    weights = torch.tensor([probabilities[k] for k in names], dtype=torch.float64)
    u = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(weights.sum())
    acc = 0.0
    for name, w in zip(names, weights.tolist()):
        acc += w
        if u < acc:
            return name
    return names[-1]


def shading_for_step(shading, step: int, generator: torch.Generator) -> str:
    """Albedo only for the first ``shading.albedo_only_steps``, then a random mode by the config's odds."""
    if step < shading.albedo_only_steps:
        return choose_shading({"albedo": 1.0}, generator)
    return choose_shading({"albedo": shading.albedo, "lambertian": shading.lambertian, "textureless": shading.textureless}, generator)


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int, stage: str) -> None:
    """Refuse a non-finite loss (before it reaches the parameters), then one optimiser step."""
    check_finite(loss, step, stage)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def end_of_step(bar, loss: torch.Tensor, mode: str, done_steps: int, iters: int, checkpoint_every: int, preview_every: int,
                checkpoint, preview) -> None:
    """Progress, then the periodic checkpoint (the final one is written by the stage) and preview."""
    bar.set_postfix(loss=f"{loss.item():.3g}", shading=mode[:4], refresh=False)
    bar.update(1)
    if done_steps % checkpoint_every == 0 and done_steps < iters:
        checkpoint(done_steps)
    if preview_every and done_steps % preview_every == 0:
        preview(done_steps)


def elapsed_eta(step: int, total: int, seconds: float) -> str:
    rate = seconds / max(step, 1)
    return f"{seconds:.0f}s elapsed, {rate:.2f}s/step, ETA {math.ceil(rate * (total - step))}s"
