"""Latent-space guidance: Stable Diffusion 1.x / 2.x through diffusers."""
from __future__ import annotations

import torch

from .base import (Guidance, GuidanceConfig, PromptEmbeddings, SDSOutput, check_model, check_prompt, resize,
                   resolve_settings, sds_from_model, view_prompts, warn_unknown_words)
from .loading import read_prior_meta
from .registry import register_guidance
from .text import from_pretrained_variant, load_text_model

SD_RECOMMENDED = {"guidance_scale": 100.0, "t_min": 0.02, "t_max": 0.98, "t_max_end": 0.5}


@register_guidance("latent")
class StableDiffusionGuidance(Guidance):
    """SDS on VAE latents: images are resized to the VAE's native size and encoded with gradient."""

    @classmethod
    def accepts(cls, index: dict) -> bool:
        """Stable Diffusion 1.x / 2.x pipelines (a VAE beside the UNet)."""
        return "vae" in index or str(index.get("_class_name", "")).startswith("StableDiffusion")

    def __init__(self, path: str, config: GuidanceConfig, device: torch.device | str = "cpu"):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        self.config, self.device = config, torch.device(device)
        dtype = torch.float16 if (self.device.type == "cuda" and config.half_precision) else torch.float32
        self.dtype = dtype
        variant = "fp16" if dtype == torch.float16 else None  # SD 2.1 ships fp16 files: half the download
        self.tokenizer, self.encode_text = load_text_model(path, self.device, dtype, variant)
        self.vae = from_pretrained_variant(AutoencoderKL, path, "vae", dtype, variant).to(self.device)
        self.unet = from_pretrained_variant(UNet2DConditionModel, path, "unet", dtype, variant).to(self.device)
        for m in (self.vae, self.unet):
            m.eval().requires_grad_(False)
        self.scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        self.alphas_cumprod = self.scheduler.alphas_cumprod.float()
        self.v_prediction = self.scheduler.config.prediction_type == "v_prediction"
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(self.unet.config.sample_size) * self.vae_scale
        check_model(path, self.alphas_cumprod, self.resolution)
        # a prior trained by meshdream (scripts/prior_train.py --latent) brings its settings and vocabulary
        self.meta = read_prior_meta(path)
        self.settings = resolve_settings(config, dict(SD_RECOMMENDED, **(self.meta or {}).get("recommended", {})))
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

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> latents [B, 4, h, w] (differentiable)."""
        x = resize(images, self.resolution) * 2 - 1
        posterior = self.vae.encode(x.to(self.dtype)).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor

    def sds_loss(self, images: torch.Tensor, embeddings: PromptEmbeddings, azimuth: torch.Tensor, elevation: torch.Tensor,
                 progress: float, generator: torch.Generator | None = None) -> SDSOutput:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        latents = self.encode_images(images)
        cond, uncond, perp_neg = embeddings.contexts(azimuth, elevation, self.config.perp_neg)
        alphas = self.alphas_cumprod.to(self.device)

        def predict_eps(x_t, t, context):
            out = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=context.to(self.dtype)).sample.float()
            if self.v_prediction:  # eps = sqrt(a) v + sqrt(1 - a) x_t
                a = alphas[t].view(-1, 1, 1, 1)
                out = a.sqrt() * out + (1 - a).sqrt() * x_t.float()
            return out

        return sds_from_model(latents, cond, uncond, predict_eps, self.alphas_cumprod, self.settings, progress,
                              self.config.grad_clip, generator, perp_neg)
