"""Evaluate the latent prior on its world: a separate classifier, trained on held-out ground-truth
renders, labels samples drawn from the prior with its own sampler.

Measures (the targets the prior must meet before the pipeline uses it):
- ``class``: object class of single-object prompts (primitives and composite objects);
- ``colour``: colour of primitive prompts;
- ``both_present``: both coloured shapes of a two-object prompt are detected;
- ``asymmetric_view``: for an asymmetric object captioned "front view" / "back view", the classifier
  sees that side (the feature on the side the caption names).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import shards, world

N_SHAPES, N_COLOURS = len(world.SHAPES), len(world.COLOURS)
INPUT = 64  # the classifier sees 64 px: enough for class, colour, a door or a nose


class WorldClassifier(nn.Module):
    """CNN over [B, 3, 64, 64] in [0, 1] with four heads: class [C], colour [10], presence of each
    coloured shape [5 * 10] (multi-label), and the side of an asymmetric object seen [4 views]."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * w * 4 * 4, 256), nn.ReLU(),
        )
        self.cls = nn.Linear(256, len(world.CLASSES))
        self.colour = nn.Linear(256, N_COLOURS)
        self.presence = nn.Linear(256, N_SHAPES * N_COLOURS)
        self.view = nn.Linear(256, len(world.VIEWS))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.shape[-1] != INPUT:
            x = F.interpolate(x, (INPUT, INPUT), mode="bilinear", align_corners=False, antialias=True)
        h = self.body(x)
        return {"cls": self.cls(h), "colour": self.colour(h), "presence": self.presence(h), "view": self.view(h)}


def presence_targets(cls: torch.Tensor, colour: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
    """[B, 50] 0/1: which coloured shapes are in the image (primitives and scenes; zeros for objects)."""
    out = torch.zeros(len(cls), N_SHAPES * N_COLOURS)
    prim = cls < N_SHAPES
    out[prim.nonzero().squeeze(1), (cls * N_COLOURS + colour)[prim]] = 1.0
    scene = pair[:, 0] >= 0
    rows = scene.nonzero().squeeze(1)
    out[rows, pair[scene, 0] * N_COLOURS + pair[scene, 1]] = 1.0
    out[rows, pair[scene, 2] * N_COLOURS + pair[scene, 3]] = 1.0
    return out


def _load(paths: Sequence[str]):
    d = shards.load_shards(list(paths), ("images", "cls", "colour", "pair", "view", "asymmetric"))
    x = torch.from_numpy(d["images"]).permute(0, 3, 1, 2)
    lab = {k: torch.from_numpy(d[k].astype(np.int64)) for k in ("cls", "colour", "pair", "view")}
    lab["asymmetric"] = torch.from_numpy(d["asymmetric"])
    return x, lab


def classifier_loss(out: Dict[str, torch.Tensor], lab: Dict[str, torch.Tensor]) -> torch.Tensor:
    loss = F.cross_entropy(out["cls"], lab["cls"])
    prim = lab["colour"] >= 0
    if prim.any():
        loss = loss + F.cross_entropy(out["colour"][prim], lab["colour"][prim])
    loss = loss + F.binary_cross_entropy_with_logits(out["presence"], presence_targets(lab["cls"], lab["colour"], lab["pair"]))
    asym = lab["asymmetric"]
    if asym.any():
        loss = loss + F.cross_entropy(out["view"][asym], lab["view"][asym])
    return loss


@torch.no_grad()
def classifier_accuracy(model: WorldClassifier, x: torch.Tensor, lab: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Accuracy of each head on ground-truth renders x (uint8 [N, 3, R, R])."""
    out = {k: [] for k in ("cls", "colour", "presence", "view")}
    for i in range(0, len(x), 128):
        o = model(x[i:i + 128].float() / 255)
        for k in out:
            out[k].append(o[k])
    out = {k: torch.cat(v) for k, v in out.items()}
    prim, asym = lab["colour"] >= 0, lab["asymmetric"]
    target = presence_targets(lab["cls"], lab["colour"], lab["pair"])
    return {
        "class": float((out["cls"].argmax(1) == lab["cls"]).float().mean()),
        "colour": float((out["colour"].argmax(1)[prim] == lab["colour"][prim]).float().mean()) if prim.any() else float("nan"),
        "presence": float(((out["presence"] > 0) == (target > 0.5)).all(1).float().mean()),
        "view": float((out["view"].argmax(1)[asym] == lab["view"][asym]).float().mean()) if asym.any() else float("nan"),
    }


def train_world_classifier(train_paths: Sequence[str], check_paths: Sequence[str], epochs: int = 12, batch: int = 64,
                           seed: int = 0, width: int = 32, log=print) -> tuple[WorldClassifier, Dict[str, float]]:
    """Train on held-out renders (``train_paths``), report accuracy on others (``check_paths``)."""
    x, lab = _load(train_paths)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = WorldClassifier(width)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            xb = x[idx].float() / 255
            flip_free = xb  # no mirroring: a mug's handle side and the views are labels
            loss = classifier_loss(model(flip_free), {k: v[idx] for k, v in lab.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xv, lv = _load(check_paths)
    acc = classifier_accuracy(model, xv, lv)
    log("classifier on held-out renders: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return model, acc


# --- prompts and the prior's samples ---

@dataclass
class Prompt:
    text: str
    kind: str  # "primitive" | "object" | "scene" | "asymmetric"
    cls: int
    colour: int = -1
    pair: tuple = (-1, -1, -1, -1)
    view: int = -1


def evaluation_prompts(scenes_per_relation: int = 10, seed: int = 0) -> List[Prompt]:
    """Every primitive x colour, every object, seeded two-object scenes, asymmetric objects from the front and back."""
    colours, shapes = list(world.COLOURS), list(world.SHAPES)
    views = ("front", "side", "back")
    out = []
    for si, s in enumerate(shapes):
        for ci, c in enumerate(colours):
            out.append(Prompt(f"{world.article(c + ' ' + s)}, {views[(si + ci) % 3]} view", "primitive", si, ci))
    for oi, name in enumerate(world.OBJECTS):
        out.append(Prompt(f"{world.article(name)}, {views[oi % 3]} view", "object", N_SHAPES + oi))
    rng = random.Random(seed)
    for ri, rel in enumerate(world.RELATIONS):
        for _ in range(scenes_per_relation):
            a, b = rng.randrange(N_SHAPES), rng.randrange(N_SHAPES)
            ca, cb = rng.randrange(N_COLOURS), rng.randrange(N_COLOURS)
            while (a, ca) == (b, cb):
                cb = rng.randrange(N_COLOURS)
            text = f"{world.article(colours[ca] + ' ' + shapes[a])} {rel} {world.article(colours[cb] + ' ' + shapes[b])}, side view"
            out.append(Prompt(text, "scene", N_SHAPES + len(world.OBJECTS) + ri, pair=(a, ca, b, cb)))
    for name in world.ASYMMETRIC:
        for v in ("front", "back"):
            out.append(Prompt(f"{world.article(name)}, {v} view", "asymmetric", world.CLASSES.index(name), view=world.VIEWS.index(v)))
    return out


@torch.no_grad()
def sample_latent_prior(folder: str, prompts: List[str], guidance_scale: float = 7.5, steps: int = 50, seed: int = 0,
                        sampler: str = "ddpm", batch: int = 32) -> torch.Tensor:
    """Images [N, 3, R, R] in [0, 1]: classifier-free-guided samples of the latent prior folder, drawn
    with its own scheduler (DDPM ancestral, or DDIM) and decoded by its VAE."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler {sampler!r} is not one of ddpm, ddim")
    tok = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
    sched = (DDPMScheduler if sampler == "ddpm" else DDIMScheduler).from_pretrained(folder, subfolder="scheduler")

    def embed(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return text(ids).last_hidden_state

    g = torch.Generator().manual_seed(seed)
    s, c = unet.config.sample_size, unet.config.in_channels
    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        cond, uncond = embed(chunk), embed([""] * len(chunk))
        z = torch.randn(len(chunk), c, s, s, generator=g)
        sched.set_timesteps(steps)
        extra = {"generator": g} if sampler == "ddpm" else {}
        for t in sched.timesteps:
            eps = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            eu, ec = eps.chunk(2)
            z = sched.step(eu + guidance_scale * (ec - eu), t, z, **extra).prev_sample
        images.append(((vae.decode(z / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1))
    return torch.cat(images)


@torch.no_grad()
def score(outputs: Dict[str, torch.Tensor], prompts: List[Prompt]) -> Dict[str, float]:
    """The four measures from classifier outputs (logits per head, [N, ...]) for ``prompts`` [N]."""
    cls_pred, col_pred, view_pred = outputs["cls"].argmax(1), outputs["colour"].argmax(1), outputs["view"].argmax(1)
    present = outputs["presence"] > 0
    single = [i for i, p in enumerate(prompts) if p.kind in ("primitive", "object", "asymmetric")]
    prim = [i for i, p in enumerate(prompts) if p.kind == "primitive"]
    scene = [i for i, p in enumerate(prompts) if p.kind == "scene"]
    asym = [i for i, p in enumerate(prompts) if p.kind == "asymmetric"]

    def mean(flags):
        return float(np.mean(flags)) if flags else float("nan")

    both = []
    for i in scene:
        a, ca, b, cb = prompts[i].pair
        both.append(bool(present[i, a * N_COLOURS + ca]) and bool(present[i, b * N_COLOURS + cb]))
    return {
        "class": mean([int(cls_pred[i]) == prompts[i].cls for i in single]),
        "colour": mean([int(col_pred[i]) == prompts[i].colour for i in prim]),
        "both_present": mean(both),
        "asymmetric_view": mean([int(cls_pred[i]) == prompts[i].cls and int(view_pred[i]) == prompts[i].view for i in asym]),
    }


TARGETS = {"class": 0.9, "colour": 0.9, "both_present": 0.8, "asymmetric_view": 0.8}


def evaluate_world(folder: str, classifier: WorldClassifier, samples_per_prompt: int = 4, guidance_scale: float = 7.5,
                   steps: int = 50, seed: int = 0, sampler: str = "ddpm", prompts: List[Prompt] | None = None):
    """(measures, images [N, 3, R, R], the prompts, one per image) for the prior folder."""
    base = prompts if prompts is not None else evaluation_prompts()
    expanded = [p for p in base for _ in range(samples_per_prompt)]
    images = sample_latent_prior(folder, [p.text for p in expanded], guidance_scale, steps, seed, sampler)
    with torch.no_grad():
        outputs = classifier(images)
    return score(outputs, expanded), images, expanded


def save_grid(images: torch.Tensor, path: str, columns: int = 10) -> None:
    """A PNG grid of images [N, 3, R, R] in [0, 1], row-major."""
    from PIL import Image

    n, _, h, w = images.shape
    rows = (n + columns - 1) // columns
    canvas = np.full((rows * h, columns * w, 3), 255, np.uint8)
    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = arr[i]
    Image.fromarray(canvas).save(path)
