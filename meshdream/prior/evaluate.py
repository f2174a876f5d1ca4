"""Evaluate the embedded prior: a separate classifier, trained on held-out renders, labels samples
drawn from the prior for every shape x colour prompt; the table reports shape and colour accuracy."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .primitives import COLOURS, SHAPES


class Classifier(nn.Module):
    """Small CNN with a shape head and a colour head, input [B, 3, 32, 32] in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),  # keep the layout: shape needs it
            nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        )
        self.shape = nn.Linear(128, len(SHAPES))
        self.colour = nn.Linear(128, len(COLOURS))

    def forward(self, x):
        h = self.body(x)
        return self.shape(h), self.colour(h)


def _load(path: str):
    with np.load(path) as d:
        return torch.from_numpy(d["images"]).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(d["shapes"]), torch.from_numpy(d["colours"])


def train_classifier(train_path: str, check_path: str, epochs: int = 15, log=print) -> tuple[Classifier, dict]:
    x, s, c = _load(train_path)
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            ps, pc = model(x[idx])
            loss = F.cross_entropy(ps, s[idx]) + F.cross_entropy(pc, c[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    xv, sv, cv = _load(check_path)
    with torch.no_grad():
        ps, pc = model(xv)
    acc = {"shape": float((ps.argmax(1) == sv).float().mean()), "colour": float((pc.argmax(1) == cv).float().mean())}
    log(f"classifier on held-out renders: shape {acc['shape']:.3f}, colour {acc['colour']:.3f}")
    return model.eval(), acc


SAMPLERS = ("ddpm", "ddim")


@torch.no_grad()
def sample_prior(folder: str, prompts: list[str], guidance_scale: float = 3.0, steps: int = 100, seed: int = 0,
                 sampler: str = "ddpm") -> torch.Tensor:
    """Images [N, 3, R, R] in [0, 1], classifier-free-guided samples of the prior folder.

    ``sampler="ddpm"`` is ancestral sampling with the folder's own DDPMScheduler (strided to ``steps``);
    it is the default because the fresh noise of each step corrects the small model's errors at
    large t. Deterministic DDIM from the same model piles those errors up (frame-filling blobs at
    30-100 steps); it is kept to measure exactly that.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    tok = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    sched = (DDPMScheduler if sampler == "ddpm" else DDIMScheduler).from_pretrained(folder, subfolder="scheduler")
    sched.set_timesteps(steps)

    def embed(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return text(ids).last_hidden_state

    cond, uncond = embed(prompts), embed([""] * len(prompts))
    R = unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), 3, R, R, generator=g)
    extra = {"generator": g} if sampler == "ddpm" else {}
    for t in sched.timesteps:
        eps = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eu, ec = eps.chunk(2)
        x = sched.step(eu + guidance_scale * (ec - eu), t, x, **extra).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


def evaluate(folder: str, classifier: Classifier, samples_per_prompt: int = 8, guidance_scale: float = 3.0, seed: int = 0,
             steps: int = 100, sampler: str = "ddpm"):
    """Accuracy table {(shape, colour): (shape_acc, colour_acc)} and the sample grid [S*C rows]."""
    from .primitives import caption

    views = [(0.0, 15.0), (90.0, 15.0), (180.0, 15.0), (45.0, 30.0)]
    prompts, labels = [], []
    for si, shape in enumerate(SHAPES):
        for ci, colour in enumerate(COLOURS):
            for k in range(samples_per_prompt):
                az, el = views[k % len(views)]
                prompts.append(caption(colour, shape, az, el))
                labels.append((si, ci))
    images = torch.cat([sample_prior(folder, prompts[i:i + 120], guidance_scale, steps, seed + i, sampler) for i in range(0, len(prompts), 120)])
    with torch.no_grad():
        ps, pc = classifier(images)
    ps, pc = ps.argmax(1), pc.argmax(1)
    table = {}
    for si, shape in enumerate(SHAPES):
        for ci, colour in enumerate(COLOURS):
            sel = torch.tensor([lab == (si, ci) for lab in labels])
            table[f"{colour} {shape}"] = (float((ps[sel] == si).float().mean()), float((pc[sel] == ci).float().mean()))
    return table, images


def markdown_table(table: dict) -> str:
    colours = list(COLOURS)
    lines = ["| shape \\ colour | " + " | ".join(colours) + " | shape acc | colour acc |", "|---" * (len(colours) + 3) + "|"]
    for shape in SHAPES:
        cells = [f"{table[f'{c} {shape}'][0]:.2f}/{table[f'{c} {shape}'][1]:.2f}" for c in colours]
        sa = np.mean([table[f"{c} {shape}"][0] for c in colours])
        ca = np.mean([table[f"{c} {shape}"][1] for c in colours])
        lines.append(f"| {shape} | " + " | ".join(cells) + f" | {sa:.2f} | {ca:.2f} |")
    sa = np.mean([v[0] for v in table.values()])
    ca = np.mean([v[1] for v in table.values()])
    lines.append(f"| **all** |" + " |" * len(colours) + f" **{sa:.2f}** | **{ca:.2f}** |")
    return "\n".join(lines)


@torch.no_grad()
def sds_background_drift(folder: str, data: str, guidance_scale: float | None = None, fractions=(0.1, 0.3, 0.5, 0.7, 0.9),
                         per_colour: int = 8, draws: int = 4, seed: int = 0) -> dict[float, tuple[float, float]]:
    """How an SDS step with this prior moves held-out renders: {t / T: (background, object)}.

    Each value is the mean descent direction -(eps_cfg - eps), projected on the unit vector from white
    to the caption's colour, over background (white) or object pixels. A positive background value
    means SDS paints the white background in the prompt's colour, which in the coarse stage (fixed
    white background) grows density until the object fills the frame. Uses the pipeline's own
    PixelGuidance with the prior's recommended guidance scale unless one is given.
    """
    from ..guidance.base import GuidanceConfig, guided_eps
    from ..guidance.pixel import PixelGuidance

    guide = PixelGuidance(folder, GuidanceConfig(name=folder, guidance_scale=guidance_scale))
    x, _, colour_ids = _load(data)
    with np.load(data) as d:
        captions = [str(c) for c in d["captions"]]
    names = list(COLOURS)
    idx = [i for ci in range(len(names)) for i in (colour_ids == ci).nonzero().flatten()[:per_colour].tolist()]
    x = x[idx]
    direction = torch.tensor([COLOURS[names[colour_ids[i]]] for i in idx]) - 1.0  # white -> colour
    direction = direction / direction.norm(dim=1, keepdim=True)
    background = (x.min(1).values > 0.97).float()  # [B, H, W]
    cond, uncond = guide.encode_text([captions[i] for i in idx]), guide.encode_text([""]).expand(len(idx), -1, -1)
    g = torch.Generator().manual_seed(seed)
    T = guide.alphas_cumprod.shape[0]
    out = {}
    for f in fractions:
        t = torch.full((len(idx),), int(f * T))
        bg, fg = [], []
        for _ in range(draws):
            noise = torch.randn(x.shape, generator=g)
            step = -(guided_eps(x * 2 - 1, t, noise, cond, uncond, guide.predict_eps, guide.alphas_cumprod,
                                guide.settings.guidance_scale) - noise)
            toward = (step * direction[:, :, None, None]).sum(1)  # [B, H, W]
            bg.append(float((toward * background).sum() / background.sum()))
            fg.append(float((toward * (1 - background)).sum() / (1 - background).sum()))
        out[f] = (float(np.mean(bg)), float(np.mean(fg)))
    return out
