"""Score distillation sampling (DreamFusion) shared by every guidance model.

Data flow: prompt -> PromptEmbeddings (one per view label + unconditional) -> for rendered images
[B, 3, H, W] in [0, 1]: model input x (pixels or VAE latents) -> t ~ U[t_min, t_max(progress)],
noise -> x_t -> eps_pred with classifier-free guidance -> grad = w(t) (eps_pred - eps) -> a loss whose
gradient with respect to x is exactly grad.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..render.cameras import VIEW_LABELS, view_label, view_prompt
from ..config import bounded
from ..errors import NonFiniteStepError, UserInputError


@dataclass
class GuidanceConfig:
    """Which model guides the optimisation and how its SDS gradient is formed.

    ``None`` fields take the model's recommended value (SD ~100, IF ~20, embedded prior: from its
    meshdream_prior.json)."""

    name: str = "embedded"  # "embedded" | "stable-diffusion" | "deepfloyd-if" | hub id | local folder
    guidance_scale: Optional[float] = bounded(None, ge=0)
    t_min: Optional[float] = bounded(None, ge=0, le=1)  # fraction of the training timesteps
    t_max: Optional[float] = bounded(None, ge=0, le=1)  # at the start of the optimisation ...
    t_max_end: Optional[float] = bounded(None, ge=0, le=1)  # ... annealed linearly to this at the end
    grad_clip: Optional[float] = bounded(None, gt=0)  # clamp each element of the SDS gradient to [-c, c]
    negative_prompt: str = ""
    view_dependent: bool = True
    # Perp-Neg (Armandpour et al. 2023, as in threestudio and stable-dreamfusion): the other views' prompts
    # as negatives, only their parts perpendicular to the view's own guidance, against the Janus problem.
    # Needs view_dependent; 2 more model calls per step (4 contexts instead of 2)
    perp_neg: bool = False
    half_precision: bool = True  # fp16 weights on CUDA (ignored on CPU)
    # CPU: run a pixel-space UNet (the embedded prior, IF) as TorchScript traces, one per input shape:
    # the same outputs with ~25% less CPU time per call for the embedded prior (scripts/bench_unet.py)
    trace_unet: bool = True


@dataclass
class ResolvedSettings:
    guidance_scale: float
    t_min: float
    t_max: float
    t_max_end: float


def resolve_settings(config: GuidanceConfig, recommended: Dict[str, float]) -> ResolvedSettings:
    def pick(name: str) -> float:
        value = getattr(config, name)
        return float(recommended[name] if value is None else value)

    s = ResolvedSettings(pick("guidance_scale"), pick("t_min"), pick("t_max"), pick("t_max_end"))
    if not 0.0 <= s.t_min < s.t_max <= 1.0 or not s.t_min < s.t_max_end <= 1.0:
        raise UserInputError(f"guidance timestep range t_min={s.t_min}, t_max={s.t_max}, t_max_end={s.t_max_end} is invalid; "
                             "need 0 <= t_min < t_max <= 1 and t_min < t_max_end <= 1")
    return s


@dataclass
class PromptEmbeddings:
    """Text embeddings: ``cond[label]`` [1, L, D] for each view label ('' = no view suffix) and
    ``uncond`` [1, L, D] (the negative prompt or the empty prompt)."""

    prompt: str
    cond: Dict[str, torch.Tensor]
    uncond: torch.Tensor
    view_dependent: bool

    def select(self, azimuth: torch.Tensor, elevation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond, uncond [B, L, D] for cameras at ``azimuth``, ``elevation`` [B] (degrees)."""
        if self.view_dependent:
            labels = [view_label(float(a), float(e)) for a, e in zip(azimuth, elevation)]
            cond = torch.cat([self.cond[lbl] for lbl in labels])
        else:
            cond = self.cond[""].expand(len(azimuth), -1, -1)
        return cond, self.uncond.expand(len(azimuth), -1, -1)

    def contexts(self, azimuth: torch.Tensor, elevation: torch.Tensor, perp_neg: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, Optional["PerpNegatives"]]:
        """cond, uncond [B, L, D] and, with ``perp_neg`` (view-dependent embeddings only), Perp-Neg's negatives."""
        if not (perp_neg and self.view_dependent):
            return (*self.select(azimuth, elevation), None)
        return perp_neg_contexts(self, azimuth, elevation)


# Perp-Neg's negative weights as functions of the interpolation ratio r: a * exp(-b r) + c (threestudio's
# defaults; f_fs(1) = 0: a view exactly in front is not pushed away from the front)
PERP_NEG_FRONT_SIDE = (4.0, 0.5, -2.426)
PERP_NEG_SIDE_FRONT = (4.0, 0.5, -2.426)
PERP_NEG_SIDE_BACK = (1.0, 0.5, -0.606)
PERP_NEG_FRONT_BACK = (1.0, 0.5, 0.967)


@dataclass
class PerpNegatives:
    """Perp-Neg's negatives for a batch: ``contexts`` [B, K, L, D] and ``weights`` [B, K] (<= 0: the
    perpendicular part of each negative's guidance is subtracted)."""

    contexts: torch.Tensor
    weights: torch.Tensor


def _decay(params: tuple[float, float, float], r: float) -> float:
    a, b, c = params
    return a * math.exp(-b * r) + c


def perp_neg_contexts(embeddings: PromptEmbeddings, azimuth: torch.Tensor, elevation: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, PerpNegatives]:
    """Perp-Neg's contexts for cameras at ``azimuth``, ``elevation`` [B] (degrees): the positive [B, L, D] is
    interpolated between the two nearest view prompts (front <-> side within 90 degrees of the front,
    side <-> back beyond), the negatives are the front and side (resp. side and front) prompts, weighted
    by the interpolation ratio; overhead views keep their own prompt and no negative."""
    c = embeddings.cond
    pos, negs, weights = [], [], []
    for a, e in zip(azimuth.tolist(), elevation.tolist()):
        az = abs((a + 180.0) % 360.0 - 180.0)
        if view_label(a, e) == "overhead":
            pos.append(c["overhead"]); negs.append([embeddings.uncond, embeddings.uncond]); weights.append([0.0, 0.0])
        elif az < 90.0:  # r = 1: straight in front, r = 0: from the side
            r = 1.0 - az / 90.0
            pos.append(r * c["front"] + (1 - r) * c["side"])
            negs.append([c["front"], c["side"]])
            weights.append([-_decay(PERP_NEG_FRONT_SIDE, r), -_decay(PERP_NEG_SIDE_FRONT, 1 - r)])
        else:  # r = 1: from the side, r = 0: straight behind
            r = 2.0 - az / 90.0
            pos.append(r * c["side"] + (1 - r) * c["back"])
            negs.append([c["side"], c["front"]])
            weights.append([-_decay(PERP_NEG_SIDE_BACK, r), -_decay(PERP_NEG_FRONT_BACK, r)])
    B = len(pos)
    contexts = torch.stack([torch.cat(n) for n in negs])  # [B, 2, L, D]
    return (torch.cat(pos), embeddings.uncond.expand(B, -1, -1),
            PerpNegatives(contexts, torch.tensor(weights, dtype=contexts.dtype, device=contexts.device)))


def perpendicular_part(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The part of each x [B, ...] perpendicular to y [B, ...] (per batch element)."""
    dims = tuple(range(1, x.ndim))
    along = (x * y).sum(dims, keepdim=True) / (y * y).sum(dims, keepdim=True).clamp_min(1e-12)
    return x - along * y


@dataclass
class SDSOutput:
    loss: torch.Tensor  # scalar; d loss / d x = grad (summed over the batch, averaged over B)
    timesteps: torch.Tensor  # [B] integer timesteps used
    grad_norm: float  # norm of the SDS gradient (after clipping)


def check_model(path: str, alphas_cumprod: torch.Tensor, resolution: int) -> None:
    """Refuse a model folder whose scheduler or UNet config cannot drive SDS (no timesteps, no image size)."""
    if alphas_cumprod.ndim != 1 or alphas_cumprod.shape[0] < 2 or not torch.isfinite(alphas_cumprod).all():
        raise UserInputError(f"guidance model {path!r}: its scheduler has {alphas_cumprod.numel()} usable training timesteps; "
                             "scheduler/scheduler_config.json needs num_train_timesteps >= 2 and a finite beta schedule")
    if resolution < 8:
        raise UserInputError(f"guidance model {path!r}: its UNet's sample_size gives a {resolution} px image; "
                             "unet/config.json needs sample_size >= 8")


def control_characters(text: str) -> str:
    """The first control character of ``text`` other than whitespace (NUL, escape ...), or ''. A text encoder
    reads them as junk tokens, and they cut file names and logs."""
    import re

    found = re.search(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]", text)
    return found.group() if found else ""


def check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserInputError(f"the prompt {prompt!r} is empty; describe the object, e.g. 'a red cube'")
    bad = control_characters(prompt)
    if bad:
        raise UserInputError(f"the prompt {prompt[:60]!r} holds the control character {bad!r}; write plain text")
    return prompt.strip()


def view_prompts(prompt: str, view_dependent: bool) -> Dict[str, str]:
    """{'': prompt} or {'front': 'PROMPT, front view', ...}."""
    if not view_dependent:
        return {"": prompt}
    return {label: view_prompt(prompt, label) for label in VIEW_LABELS}


def annealed_t_max(settings: ResolvedSettings, progress: float) -> float:
    p = min(max(float(progress), 0.0), 1.0)
    return settings.t_max + (settings.t_max_end - settings.t_max) * p


def sample_timesteps(batch: int, settings: ResolvedSettings, progress: float, num_train_timesteps: int,
                     generator: torch.Generator | None) -> torch.Tensor:
    """[B] integer timesteps uniform in [t_min, t_max(progress)] of the training range."""
    lo = int(settings.t_min * num_train_timesteps)
    hi = max(lo + 1, int(annealed_t_max(settings, progress) * num_train_timesteps))
    hi = min(hi, num_train_timesteps - 1)
    return torch.randint(lo, hi + 1, (batch,), generator=generator)


@torch.no_grad()
def guided_eps(x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, predict_eps,
               alphas_cumprod: torch.Tensor, guidance_scale: float, perp_neg: Optional[PerpNegatives] = None) -> torch.Tensor:
    """Classifier-free-guided eps [B, C, h, w] for ``x`` noised to timesteps ``t`` [B] with ``noise``; with
    ``perp_neg``, the weighted parts of the negatives' guidance perpendicular to the prompt's are added
    (eps_u + s (e_pos + sum_k w_k perp(e_k, e_pos)), e = eps_context - eps_u)."""
    B = x.shape[0]
    a = alphas_cumprod.to(x.device)[t.to(x.device)].view(B, 1, 1, 1).float()
    x_t = a.sqrt() * x.detach().float() + (1 - a).sqrt() * noise
    contexts = [uncond, cond] + ([] if perp_neg is None else list(perp_neg.contexts.unbind(1)))
    n = len(contexts)
    eps = predict_eps(torch.cat([x_t] * n), torch.cat([t] * n).to(x.device), torch.cat(contexts)).float()
    eps_uncond, eps_cond, *eps_negs = eps.chunk(n)
    e_pos = eps_cond - eps_uncond
    direction = e_pos
    if perp_neg is not None:
        w = perp_neg.weights.to(e_pos)
        direction = e_pos + sum(w[:, k].view(B, *[1] * (x.ndim - 1)) * perpendicular_part(e - eps_uncond, e_pos)
                                for k, e in enumerate(eps_negs))
    return eps_uncond + guidance_scale * direction


class NonFiniteGuidanceError(NonFiniteStepError):
    """The SDS gradient has NaN or infinite elements; the stage loop adds the step to the message."""

    def __init__(self, t: torch.Tensor, num_timesteps: int, guidance_scale: float, grad: torch.Tensor):
        bad = int((~torch.isfinite(grad)).sum())
        self.timesteps = [int(x) for x in t.tolist()]
        self.guidance_scale = guidance_scale
        super().__init__(
            f"the guidance gradient is not finite ({bad} of {grad.numel()} elements NaN or infinite) at timestep(s) "
            f"t = {', '.join(str(x) for x in self.timesteps)} of {num_timesteps} with guidance scale {guidance_scale:g}; "
            "the step was not applied. Lower guidance.guidance_scale in the config; with half precision on CUDA, try "
            "guidance.half_precision: false")


def sds_from_model(
    x: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    predict_eps,
    alphas_cumprod: torch.Tensor,
    settings: ResolvedSettings,
    progress: float,
    grad_clip: float | None,
    generator: torch.Generator | None,
    perp_neg: Optional[PerpNegatives] = None,
) -> SDSOutput:
    """The SDS loss on model inputs ``x`` [B, C, h, w] (pixels in [-1, 1] or latents).

    ``predict_eps(x_t, t, context)`` returns eps for the batched [uncond; cond] contexts.
    Randomness (t and noise) comes from ``generator`` (drawn on the CPU) so runs are reproducible.
    """
    B = x.shape[0]
    t = sample_timesteps(B, settings, progress, alphas_cumprod.shape[0], generator)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
    a = alphas_cumprod.to(x.device)[t.to(x.device)].view(B, 1, 1, 1).float()
    with torch.no_grad():
        eps_pred = guided_eps(x, t, noise, cond, uncond, predict_eps, alphas_cumprod, settings.guidance_scale, perp_neg)
        grad = (1 - a) * (eps_pred - noise)  # w(t) = 1 - alpha_bar(t) (DreamFusion)
        if not torch.isfinite(grad).all():  # never zero it silently: the run would go on without guidance
            raise NonFiniteGuidanceError(t, alphas_cumprod.shape[0], settings.guidance_scale, grad)
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
    target = (x.float() - grad).detach()
    loss = 0.5 * F.mse_loss(x.float(), target, reduction="sum") / B
    return SDSOutput(loss=loss, timesteps=t, grad_norm=float(grad.norm()))


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize [B, C, H, W] to size x size (area-averaged when shrinking, bilinear when growing)."""
    if images.shape[-2:] == (size, size):
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(images, (size, size), mode="bilinear", align_corners=False)


class UnknownWordsWarning(UserWarning):
    """The prompt has words the embedded prior never saw in training."""


def prompt_words(text: str) -> list[str]:
    """Lower-cased words of ``text``: runs of letters or digits in any script, and every other symbol
    (an emoji) on its own; ASCII punctuation is not a word."""
    import re
    import string

    return [w for w in re.findall(r"\w+|[^\w\s]", text.lower()) if w not in string.punctuation]


def _listed(words: list[str], most: int = 10) -> str:
    shown = ", ".join(repr(w) for w in words[:most])
    return shown + (f" and {len(words) - most} more" if len(words) > most else "")


def warn_unknown_words(prompt: str, known: list[str]) -> list[str]:
    unknown = [w for w in prompt_words(prompt) if w not in set(known)]
    if unknown:
        warnings.warn(
            f"the embedded prior does not know the word(s) {_listed(list(dict.fromkeys(unknown)))}; "
            f"it knows: {', '.join(w for w in known if w.isalpha())}. Use a prompt like 'a red cube', or a "
            "Stable Diffusion / DeepFloyd IF model with --guidance.",
            UnknownWordsWarning,
            stacklevel=3,
        )
    return unknown


class PromptTruncatedWarning(UserWarning):
    """The prompt (with its view suffix) is longer than the text encoder reads; the rest is dropped."""


class Guidance:
    """Interface of every guidance model (see the module docstring for the data flow).

    A family is registered with ``meshdream.guidance.register_guidance(kind)``; ``__init__(path, config,
    device)`` loads it and :meth:`accepts` says which pipeline folders it loads."""

    resolution: int
    settings: ResolvedSettings
    config: GuidanceConfig

    @classmethod
    def accepts(cls, index: dict) -> bool:
        """Whether this class loads a diffusers pipeline folder whose model_index.json holds ``index``."""
        return False

    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> PromptEmbeddings:
        raise NotImplementedError

    def sds_loss(self, images: torch.Tensor, embeddings: PromptEmbeddings, azimuth: torch.Tensor, elevation: torch.Tensor,
                 progress: float, generator: torch.Generator | None = None) -> SDSOutput:
        raise NotImplementedError
