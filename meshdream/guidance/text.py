"""Text encoders of any diffusers pipeline folder: CLIP (SD, embedded prior) or T5 (DeepFloyd IF)."""
from __future__ import annotations

from typing import Callable

import torch


def load_text_model(path: str, device: torch.device, dtype: torch.dtype) -> tuple[object, Callable[[list[str]], torch.Tensor]]:
    """Load ``tokenizer/`` and ``text_encoder/`` of a pipeline folder or hub id.

    Returns (tokenizer, encode) where encode(texts) -> [N, L, D] hidden states. The encoder class is
    the one named in text_encoder/config.json ("architectures"), so CLIP and T5 load alike."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
    config = AutoConfig.from_pretrained(path, subfolder="text_encoder")
    arch = (getattr(config, "architectures", None) or ["CLIPTextModel"])[0]
    cls = getattr(transformers, arch)
    model = cls.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype).to(device)
    model.eval().requires_grad_(False)
    is_t5 = "T5" in arch
    max_length = min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)

    def encode(texts: list[str]) -> torch.Tensor:
        tok = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        ids = tok.input_ids.to(device)
        if is_t5:  # IF conditions on T5 states with the padding masked out
            return model(ids, attention_mask=tok.attention_mask.to(device)).last_hidden_state
        return model(ids).last_hidden_state

    return tokenizer, encode
