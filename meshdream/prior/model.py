"""The embedded prior's components, built from scratch and saved in diffusers layout.

folder/
  model_index.json       diffusers pipeline index (so `diffusers` tools recognise the folder)
  unet/                  UNet2DConditionModel, pixel space, 3 -> 3 channels (epsilon)
  text_encoder/          tiny transformers CLIPTextModel
  tokenizer/             PreTrainedTokenizerFast with a word-level vocabulary
  scheduler/             DDPMScheduler (squaredcos_cap_v2, epsilon prediction)
  meshdream_prior.json   resolution, shapes, colours, vocabulary, recommended SDS settings, evaluation
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Iterable

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .primitives import COLOURS, SHAPES

PAD, UNK = "[PAD]", "[UNK]"
MAX_TOKENS = 12
TEXT_DIM = 64


def vocabulary() -> list[str]:
    """Every word a caption can contain."""
    words = ["a", "an", ",", "view", "front", "side", "back", "overhead"]
    return words + list(COLOURS) + list(SHAPES)


def build_tokenizer(words: Iterable[str] | None = None, max_length: int = MAX_TOKENS) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: lower-cases, splits on spaces and punctuation, pads to ``max_length``."""
    vocab = {PAD: 0, UNK: 1}
    for w in words or vocabulary():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, model_max_length=max_length)


def build_text_encoder(vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=MAX_TOKENS, pad_token_id=0, bos_token_id=0,
                            eos_token_id=1, projection_dim=TEXT_DIM)
    return CLIPTextModel(config)


def build_unet(resolution: int = 32) -> UNet2DConditionModel:
    """~1.7M parameters: fast enough to train on a laptop CPU in an hour."""
    return UNet2DConditionModel(
        sample_size=resolution, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=16,
    )


def build_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                         clip_sample=True, variance_type="fixed_small")


def encode_text(tokenizer: PreTrainedTokenizerFast, text_encoder: CLIPTextModel, prompts: list[str]) -> torch.Tensor:
    """[B, MAX_TOKENS, TEXT_DIM] hidden states (the UNet's cross-attention context)."""
    ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device)).last_hidden_state


def write_prior_folder(folder: str | os.PathLike, parts: dict[str, Any], index: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a prior folder atomically: build it beside the target, then swap it in. ``parts``: {sub-folder: a
    model, tokenizer or scheduler with ``save_pretrained``}; ``index``: model_index.json; ``meta``:
    meshdream_prior.json. A samples.png and LICENSE already in the folder are kept."""
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".prior-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes a private folder; the prior ships with the package
        for name, part in parts.items():
            if isinstance(part, torch.nn.Module):
                part.save_pretrained(os.path.join(tmp, name), safe_serialization=True)
            else:
                part.save_pretrained(os.path.join(tmp, name))
        with open(os.path.join(tmp, "model_index.json"), "w") as f:
            json.dump(dict(index, _diffusers_version=__import__("diffusers").__version__), f, indent=2)
        with open(os.path.join(tmp, "meshdream_prior.json"), "w") as f:
            json.dump(meta, f, indent=2)
        for extra in ("samples.png", "LICENSE"):  # keep artefacts written next to the weights (and their licence)
            if os.path.exists(os.path.join(folder, extra)):
                shutil.copy(os.path.join(folder, extra), os.path.join(tmp, extra))
        old = None
        if os.path.exists(folder):
            old = folder + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_prior(folder: str | os.PathLike, unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
               tokenizer: PreTrainedTokenizerFast, scheduler: DDPMScheduler, meta: dict[str, Any]) -> None:
    """Write the pixel prior's folder atomically."""
    index = {
        "_class_name": "MeshdreamPriorPipeline",
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
    }
    write_prior_folder(folder, {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler},
                       index, meta)


def default_meta(resolution: int = 32) -> dict[str, Any]:
    return {
        "resolution": resolution,
        "shapes": list(SHAPES),
        "colours": list(COLOURS),
        "vocabulary": vocabulary(),
        "background": "white",
        "recommended": {"guidance_scale": 10.0, "t_min": 0.02, "t_max": 0.98, "t_max_end": 0.5},
        "training": {},
    }
