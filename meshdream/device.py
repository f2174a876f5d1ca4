"""Which torch device a run uses."""
from __future__ import annotations

import torch

from .errors import UserInputError


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> CUDA when available, else the CPU; 'cpu' / 'cuda' as asked (UserInputError when CUDA is missing)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' was asked for but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise UserInputError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return torch.device(device)
