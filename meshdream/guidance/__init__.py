"""Guidance models for score distillation: one interface, several models.

    guidance = load_guidance(GuidanceConfig(name="embedded"), device="cpu")
    emb = guidance.encode_prompt("a red cube")                        # view-dependent embeddings
    out = guidance.sds_loss(images, emb, azimuth, elevation, progress)  # images [B, 3, H, W] in [0, 1]
    out.loss.backward()                                                # d loss / d images = w(t)(eps_pred - eps)

A registry maps a model family to its class, because users really swap guidance models.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from .base import Guidance, GuidanceConfig, PromptEmbeddings, SDSOutput, UnknownWordsWarning
from .loading import ALIASES, embedded_prior_path, kind_of, resolve, unloadable

GUIDANCE_KINDS: Dict[str, Callable[..., Guidance]] = {}


def register_guidance(kind: str):
    def deco(factory):
        GUIDANCE_KINDS[kind] = factory
        return factory

    return deco


@register_guidance("latent")
def _stable_diffusion(path: str, config: GuidanceConfig, device) -> Guidance:
    from .stable_diffusion import StableDiffusionGuidance

    return StableDiffusionGuidance(path, config, device)


@register_guidance("pixel")
def _pixel(path: str, config: GuidanceConfig, device) -> Guidance:
    from .pixel import PixelGuidance

    return PixelGuidance(path, config, device)


def load_guidance(config: GuidanceConfig | str, device: torch.device | str = "cpu") -> Guidance:
    """Load the guidance model named by ``config.name`` (lazily, from a folder or the hub)."""
    if isinstance(config, str):
        config = GuidanceConfig(name=config)
    _quiet_libraries()
    path, index = resolve(config.name)
    kind = kind_of(index, path)
    try:
        return GUIDANCE_KINDS[kind](path, config, device)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, UserWarning):
            raise
        from ..errors import UserInputError

        if isinstance(e, UserInputError):
            raise
        raise unloadable(config.name, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from None


def _quiet_libraries() -> None:
    """diffusers / transformers chatter (weight-loading bars, `accelerate` advice) is not for our users."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


__all__ = ["Guidance", "GuidanceConfig", "PromptEmbeddings", "SDSOutput", "UnknownWordsWarning", "load_guidance",
           "register_guidance", "GUIDANCE_KINDS", "ALIASES", "embedded_prior_path"]
