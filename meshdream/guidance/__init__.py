"""Guidance models for score distillation: one interface, several models.

    guidance = load_guidance(GuidanceConfig(name="embedded"), device="cpu")
    emb = guidance.encode_prompt("a red cube")                        # view-dependent embeddings
    out = guidance.sds_loss(images, emb, azimuth, elevation, progress)  # images [B, 3, H, W] in [0, 1]
    out.loss.backward()                                                # d loss / d images = w(t)(eps_pred - eps)

A registry maps a model family to its class, because users really swap guidance models: a class
registered with ``@register_guidance(kind)`` declares the pipeline folders it loads (``accepts``), and
``load_guidance`` builds the family that accepts the folder (see :mod:`.registry`).
"""
from __future__ import annotations

import torch

from ..errors import MeshdreamError
from .base import Guidance, GuidanceConfig, PromptEmbeddings, SDSOutput, UnknownWordsWarning
from .loading import ALIASES, embedded_prior_path, resolve, unloadable
from .pixel import PixelGuidance
from .registry import GUIDANCE_KINDS, kind_of, register_guidance
from .stable_diffusion import StableDiffusionGuidance

# Packages whose ValueError / KeyError means "this folder is not a model they can read".
_LOADER_PACKAGES = ("diffusers", "transformers", "huggingface_hub", "safetensors", "tokenizers", "json")


def load_guidance(config: GuidanceConfig | str, device: torch.device | str = "cpu") -> Guidance:
    """Load the guidance model named by ``config.name`` (lazily, from a folder or the hub)."""
    if isinstance(config, str):
        config = GuidanceConfig(name=config)
    _quiet_libraries()
    path, index = resolve(config.name)
    cls = GUIDANCE_KINDS[kind_of(index, path)]
    try:
        return cls(path, config, device)
    except MeshdreamError:
        raise
    except Exception as e:
        # A missing / unreadable file, or a model library refusing the folder (with whatever error type it uses:
        # safetensors' SafetensorError is none of the built-in ones), is bad input; errors raised by a
        # constructor's own code are bugs and keep their traceback.
        if not isinstance(e, OSError) and not _raised_in(e, _LOADER_PACKAGES):
            raise
        raise unloadable(config.name, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from None


def _raised_in(error: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether the innermost frame of ``error``'s traceback is in one of ``packages``."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.split(".")[0] in packages


def _quiet_libraries() -> None:
    """diffusers / transformers chatter (weight-loading bars, `accelerate` advice) is not for our users."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


__all__ = ["Guidance", "GuidanceConfig", "PromptEmbeddings", "SDSOutput", "UnknownWordsWarning", "load_guidance",
           "register_guidance", "GUIDANCE_KINDS", "ALIASES", "embedded_prior_path", "PixelGuidance", "StableDiffusionGuidance"]
