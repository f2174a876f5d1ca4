"""The latent prior: a miniature Stable Diffusion of the world (meshdream.prior.world), in diffusers layout.

folder/
  model_index.json       a StableDiffusionPipeline index: meshdream's latent (SD) guidance loads it
  vae/                   AutoencoderKL, 128 px <-> 4 x 32 x 32 latents (scaling_factor: 1 / latent std)
  unet/                  UNet2DConditionModel on the latents (epsilon prediction)
  text_encoder/          CLIPTextModel
  tokenizer/             PreTrainedTokenizerFast, word level, over world.vocabulary()
  scheduler/             DDPMScheduler, SD's scaled-linear betas
  meshdream_prior.json   resolution, vocabulary, classes, recommended SDS settings, training record
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Tuple

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from . import world
from .model import build_tokenizer, write_prior_folder

MAX_TOKENS = 16


@dataclass
class LatentArchitecture:
    """Sizes of the three networks (the defaults: the shipped design; tests shrink them)."""

    resolution: int = 128
    vae_blocks: Tuple[int, ...] = (16, 32, 64)  # 3 blocks: 4x down, 128 px -> 32 x 32 latents
    latent_channels: int = 4
    unet_blocks: Tuple[int, ...] = (32, 64, 128)  # 4.2 M, 2.0 GFLOP per CFG call (64,128,128: 6.7 M, 5.2)
    unet_layers: int = 1
    attention_head_dim: int = 8
    text_dim: int = 96
    text_layers: int = 3
    text_heads: int = 4
    norm_groups: int = 16
    vae_norm_groups: int = 8


def latent_size(arch: LatentArchitecture) -> int:
    return arch.resolution // 2 ** (len(arch.vae_blocks) - 1)


def build_vae(arch: LatentArchitecture) -> AutoencoderKL:
    """SD's AutoencoderKL, small: no mid-block attention (the encoder runs in every SDS step)."""
    n = len(arch.vae_blocks)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(arch.vae_blocks), layers_per_block=1,
                         latent_channels=arch.latent_channels, norm_num_groups=arch.vae_norm_groups, sample_size=arch.resolution,
                         mid_block_add_attention=False, scaling_factor=1.0)


def build_unet(arch: LatentArchitecture) -> UNet2DConditionModel:
    n = len(arch.unet_blocks)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(sample_size=latent_size(arch), in_channels=arch.latent_channels, out_channels=arch.latent_channels,
                                layers_per_block=arch.unet_layers, block_out_channels=tuple(arch.unet_blocks),
                                down_block_types=down, up_block_types=up, cross_attention_dim=arch.text_dim,
                                attention_head_dim=arch.attention_head_dim, norm_num_groups=arch.norm_groups)


def build_text_encoder(arch: LatentArchitecture, vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=arch.text_dim, intermediate_size=4 * arch.text_dim,
                            num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads, max_position_embeddings=MAX_TOKENS,
                            pad_token_id=0, bos_token_id=0, eos_token_id=1, projection_dim=arch.text_dim)
    return CLIPTextModel(config)


def build_world_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the world's vocabulary (unknown words map to [UNK])."""
    return build_tokenizer(world.vocabulary(), MAX_TOKENS)


def build_scheduler() -> DDPMScheduler:
    """Stable Diffusion's training schedule (scaled-linear betas 0.00085 -> 0.012, epsilon)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False)


def encode_text(tokenizer, text_encoder: CLIPTextModel, prompts: list[str]) -> torch.Tensor:
    """[B, MAX_TOKENS, text_dim] hidden states: the UNet's cross-attention context."""
    ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device)).last_hidden_state


def default_meta(arch: LatentArchitecture) -> dict[str, Any]:
    return {
        "kind": "latent",
        "resolution": arch.resolution,
        "colours": list(world.COLOURS),
        "shapes": list(world.SHAPES),
        "objects": list(world.OBJECTS),
        "asymmetric": dict(world.ASYMMETRIC),
        "relations": list(world.RELATIONS),
        "synonyms": {k: list(v) for k, v in world.SYNONYMS.items()},
        "vocabulary": world.vocabulary(),
        "background": "white",
        "recommended": {"guidance_scale": 7.5, "t_min": 0.02, "t_max": 0.98, "t_max_end": 0.5},
        "training": {},
    }


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "vae": ["diffusers", "AutoencoderKL"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
    "scheduler": ["diffusers", "DDPMScheduler"],
    "safety_checker": [None, None],
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
}


def save_latent_prior(folder: str | os.PathLike, vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
                      tokenizer, scheduler: DDPMScheduler, meta: dict[str, Any]) -> None:
    """Write the prior folder atomically (a Stable Diffusion pipeline folder); keeps a LICENSE and
    samples.png already in the folder."""
    write_prior_folder(folder, {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer,
                                "scheduler": scheduler}, MODEL_INDEX, meta)
