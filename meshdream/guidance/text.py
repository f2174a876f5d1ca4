"""Text encoders of any diffusers pipeline folder: CLIP (SD, embedded prior) or T5 (DeepFloyd IF)."""
from __future__ import annotations

from typing import Callable

import torch


TEXT_ENCODERS = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel")


def from_pretrained_variant(cls, path: str, subfolder: str, dtype: torch.dtype, variant: str | None, **kwargs):
    """``cls.from_pretrained`` of the ``variant`` weight files ("fp16": half the download) where the
    folder has them, else of the full-precision files (cast to ``dtype`` either way). Safetensors only."""
    if variant:
        try:
            return cls.from_pretrained(path, subfolder=subfolder, torch_dtype=dtype, variant=variant, use_safetensors=True, **kwargs)
        except (OSError, ValueError, EnvironmentError):
            pass
    return cls.from_pretrained(path, subfolder=subfolder, torch_dtype=dtype, use_safetensors=True, **kwargs)


def free_device_memory(device: torch.device) -> None:
    """Hand cached blocks back to the driver after a large model was dropped."""
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _has_sentencepiece() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("sentencepiece", "google.protobuf"))


def load_text_model(path: str, device: torch.device, dtype: torch.dtype,
                    variant: str | None = None) -> tuple[object, Callable[[list[str]], torch.Tensor]]:
    """Load ``tokenizer/`` and ``text_encoder/`` of a pipeline folder or hub id.

    Returns (tokenizer, encode) where encode(texts) -> [N, L, D] hidden states. The encoder class is
    the one named in text_encoder/config.json ("architectures"), so CLIP and T5 load alike; only the
    classes in TEXT_ENCODERS are accepted. No code from the folder ever runs (trust_remote_code=False)
    and weights load from safetensors only (pickled .bin weights are refused). ``variant`` ("fp16")
    picks the half-precision weight files where the folder has them (IF's T5: 9 GB, not 18)."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from ..errors import MeshdreamError, UserInputError

    try:
        config = AutoConfig.from_pretrained(path, subfolder="text_encoder", trust_remote_code=False)
        arch = (getattr(config, "architectures", None) or ["CLIPTextModel"])[0]
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", trust_remote_code=False)
        except (ImportError, ValueError) as e:
            if "T5" in arch and not _has_sentencepiece():
                raise MeshdreamError("DeepFloyd IF's T5 tokenizer needs sentencepiece and protobuf: pip install -e \".[if]\" "
                                     f"(or pip install sentencepiece protobuf); {type(e).__name__}: {str(e)[:200]}") from None
            raise
    except ValueError as e:
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise UserInputError(f"guidance model {path!r} needs to run its own Python code for its tokenizer or text encoder; "
                                 "meshdream never runs code from model folders. Use a standard diffusers folder, or "
                                 "--guidance embedded") from None
        raise
    if arch not in TEXT_ENCODERS:
        raise UserInputError(f"guidance model {path!r}: text encoder architecture {arch!r} is not supported; "
                             f"supported: {', '.join(TEXT_ENCODERS)}")
    cls = getattr(transformers, arch)
    model = from_pretrained_variant(cls, path, "text_encoder", dtype, variant, trust_remote_code=False).to(device)
    model.eval().requires_grad_(False)
    is_t5 = "T5" in arch
    max_length = min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)

    def encode(texts: list[str]) -> torch.Tensor:
        warn_truncated(tokenizer, texts, max_length)
        tok = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        ids = tok.input_ids.to(device)
        if is_t5:  # IF conditions on T5 states with the padding masked out
            return model(ids, attention_mask=tok.attention_mask.to(device)).last_hidden_state
        return model(ids).last_hidden_state

    encode.is_t5 = is_t5  # type: ignore[attr-defined]
    return tokenizer, encode


def warn_truncated(tokenizer, texts: list[str], max_length: int) -> None:
    """Warn (once) when texts are longer than the ``max_length`` tokens the encoder reads, naming what was kept."""
    import warnings

    from .base import PromptTruncatedWarning

    ids = tokenizer(texts, truncation=False).input_ids
    long = [(text, len(i)) for text, i in zip(texts, ids) if len(i) > max_length]
    if long:
        text, n = long[0]
        kept = tokenizer.decode(tokenizer(text, truncation=True, max_length=max_length).input_ids, skip_special_tokens=True)
        shown = text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
        kept = kept if len(kept) <= 200 else f"{kept[:200]}..."
        warnings.warn(f"the prompt {shown!r} is {n} tokens but the guidance model reads {max_length}; only {kept!r} is used"
                      f"{f' ({len(long)} of {len(texts)} prompts, view suffixes included, are cut)' if len(long) > 1 else ''}. "
                      "Use a shorter prompt", PromptTruncatedWarning, stacklevel=3)
