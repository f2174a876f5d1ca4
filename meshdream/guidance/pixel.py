"""Pixel-space guidance: DeepFloyd IF stage I (the public cousin of Imagen) and the embedded prior."""
from __future__ import annotations


import torch

from .base import (Guidance, GuidanceConfig, PromptEmbeddings, SDSOutput, check_model, check_prompt, resize,
                   resolve_settings, sds_from_model, view_prompts, warn_unknown_words)
from .loading import read_prior_meta
from .registry import register_guidance
from .traced_unet import TracedUNet
from .text import free_device_memory, from_pretrained_variant, load_text_model

IF_RECOMMENDED = {"guidance_scale": 20.0, "t_min": 0.02, "t_max": 0.98, "t_max_end": 0.5}


@register_guidance("pixel")
class PixelGuidance(Guidance):
    """SDS directly on RGB pixels resized to the UNet's sample size (IF: 64, embedded prior: 32).

    A UNet with 6 output channels predicts (eps, variance) as IF does: the first 3 are eps."""

    @classmethod
    def accepts(cls, index: dict) -> bool:
        """DeepFloyd IF stage I, the embedded prior, or any pipeline with a UNet and no VAE."""
        name = str(index.get("_class_name", ""))
        if "vae" in index or name.startswith("StableDiffusion"):
            return False
        return name.startswith("IF") or name == "MeshdreamPriorPipeline" or "unet" in index

    def __init__(self, path: str, config: GuidanceConfig, device: torch.device | str = "cpu"):
        from diffusers import DDPMScheduler, UNet2DConditionModel

        self.config, self.device = config, torch.device(device)
        dtype = torch.float16 if (self.device.type == "cuda" and config.half_precision) else torch.float32
        variant = "fp16" if dtype == torch.float16 else None  # IF ships fp16 files: half the download
        self._text_args = (path, self.device, dtype, variant)
        self.tokenizer, self._encode = load_text_model(*self._text_args)
        # IF's T5-XXL (4.7 B parameters, ~9 GB in fp16) is needed once per prompt: free it after encoding
        self.release_text_encoder = bool(getattr(self._encode, "is_t5", False))
        self.unet = from_pretrained_variant(UNet2DConditionModel, path, "unet", dtype, variant).to(self.device)
        self.unet.eval().requires_grad_(False)
        self._unet_call = TracedUNet(self.unet) if (config.trace_unet and self.device.type == "cpu") else None
        self.scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        self.alphas_cumprod = self.scheduler.alphas_cumprod.float()
        self.dtype = dtype
        self.meta = read_prior_meta(path)
        recommended = dict(IF_RECOMMENDED, **(self.meta or {}).get("recommended", {}))
        self.settings = resolve_settings(config, recommended)
        self.resolution = int(self.unet.config.sample_size)
        check_model(path, self.alphas_cumprod, self.resolution)
        self.known_words = (self.meta or {}).get("vocabulary")

    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> PromptEmbeddings:
        prompt = check_prompt(prompt)
        negative = self.config.negative_prompt if negative_prompt is None else negative_prompt
        if self.known_words:
            warn_unknown_words(prompt + " " + negative, self.known_words)
        texts = view_prompts(prompt, self.config.view_dependent)
        with torch.no_grad():
            emb = self.encode_text(list(texts.values()) + [negative])
        cond = {label: emb[i : i + 1] for i, label in enumerate(texts)}
        return PromptEmbeddings(prompt=prompt, cond=cond, uncond=emb[-1:], view_dependent=self.config.view_dependent)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """[N, L, D] text states; a released T5 is loaded again for a new prompt."""
        if self._encode is None:
            self.tokenizer, self._encode = load_text_model(*self._text_args)
        emb = self._encode(texts)
        if self.release_text_encoder:
            self._encode = None
            free_device_memory(self.device)
        return emb

    def sds_loss(self, images: torch.Tensor, embeddings: PromptEmbeddings, azimuth: torch.Tensor, elevation: torch.Tensor,
                 progress: float, generator: torch.Generator | None = None) -> SDSOutput:
        """images [B, 3, H, W] in [0, 1] -> SDS loss on their pixels at the model's resolution."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        x = resize(images, self.resolution) * 2 - 1
        cond, uncond, perp_neg = embeddings.contexts(azimuth, elevation, self.config.perp_neg)
        return sds_from_model(x, cond, uncond, self.predict_eps, self.alphas_cumprod, self.settings, progress,
                              self.config.grad_clip, generator, perp_neg)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """eps [B, 3, h, w] for pixels x_t; a 6-channel (learned-variance, IF) UNet's first 3 channels."""
        if self._unet_call is not None:
            out = self._unet_call(x_t.to(self.dtype), t, context.to(self.dtype))
        else:
            out = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=context.to(self.dtype)).sample
        return out[:, :3]
