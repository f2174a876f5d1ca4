"""Tiny randomly initialised diffusion models, saved in the real diffusers layouts, so tests load them
through the same `from_pretrained` code a user runs (the hub is unreachable here)."""
from __future__ import annotations

import json
import os

import torch


def _clip_text(vocab_size: int, hidden: int = 32, max_len: int = 16):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=max_len,
                                        pad_token_id=0, bos_token_id=0, eos_token_id=1, projection_dim=hidden))


def _unet(sample_size: int, in_ch: int, out_ch: int, cross_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=sample_size, in_channels=in_ch, out_channels=out_ch, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_dim,
                                attention_head_dim=4, norm_num_groups=4, **extra)


def _word_tokenizer(words, max_len: int = 16):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_len)


WORDS = ["a", "an", ",", "view", "front", "side", "back", "overhead", "red", "green", "blue", "cube", "sphere", "torus"]


def save_tiny_pixel_prior(folder: str, resolution: int = 16) -> str:
    """A random embedded-prior-style folder (MeshdreamPriorPipeline layout, CLIP text, 3-channel UNet)."""
    from diffusers import DDPMScheduler

    tok = _word_tokenizer(WORDS)
    text = _clip_text(len(tok))
    unet = _unet(resolution, 3, 3, 32)
    for name, part in (("tokenizer", tok), ("text_encoder", text), ("unet", unet)):
        part.save_pretrained(os.path.join(folder, name))
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "MeshdreamPriorPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
                   "scheduler": ["diffusers", "DDPMScheduler"]}, f)
    with open(os.path.join(folder, "meshdream_prior.json"), "w") as f:
        json.dump({"resolution": resolution, "vocabulary": WORDS,
                   "recommended": {"guidance_scale": 7.5, "t_min": 0.02, "t_max": 0.98, "t_max_end": 0.5}}, f)
    return folder


def _clip_bpe_tokenizer(folder: str):
    """A tiny CLIPTokenizer: characters as the vocabulary, no merges."""
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz,")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=16,
                         pad_token="<|endoftext|>")


def save_tiny_stable_diffusion(folder: str, prediction_type: str = "epsilon") -> str:
    """A random Stable Diffusion folder (StableDiffusionPipeline.save_pretrained): VAE x2, 8x8 latents."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline

    tok = _clip_bpe_tokenizer(os.path.join(folder, "_tok"))
    text = _clip_text(len(tok.get_vocab()))
    unet = _unet(8, 4, 4, 32)
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=16)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type=prediction_type, steps_offset=1, clip_sample=False)  # as SD's own configs
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def save_tiny_deepfloyd_if(folder: str) -> str:
    """A random DeepFloyd IF stage I folder (IFPipeline.save_pretrained): T5 encoder, 6-channel UNet."""
    from diffusers import DDPMScheduler, IFPipeline
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz,\u2581"]
    tk = Tokenizer(models.Unigram(pieces, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tok = T5TokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=16,
                          extra_ids=0)
    vocab = dict(pieces)
    torch.manual_seed(0)
    text = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2))
    unet = _unet(16, 3, 6, 32)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range")
    pipe = IFPipeline(tokenizer=tok, text_encoder=text, unet=unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                      watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
