"""Guidance families: a registry from kind ("latent", "pixel", ...) to the Guidance class that loads it.

Each class says which diffusers pipeline folders it accepts (``accepts(model_index)``), so choosing a
family for a folder is a question put to the registry, and a family registered later is asked first
(it may claim folders a built-in family would also take).
"""
from __future__ import annotations

from typing import Dict, Type

from ..errors import UserInputError
from .base import Guidance

GUIDANCE_KINDS: Dict[str, Type[Guidance]] = {}


def register_guidance(kind: str):
    """Class decorator: register Guidance subclass ``cls`` as family ``kind``.

    ``cls(path, config, device)`` loads the model; ``cls.accepts(index) -> bool`` says whether it loads
    a pipeline folder whose model_index.json holds ``index``."""

    def deco(cls: Type[Guidance]) -> Type[Guidance]:
        if not (isinstance(cls, type) and issubclass(cls, Guidance)):
            raise TypeError(f"guidance kind {kind!r} must be a Guidance subclass, got {cls!r}")
        GUIDANCE_KINDS[kind] = cls
        return cls

    return deco


def kind_of(index: dict, path: str) -> str:
    """The registered family that accepts the pipeline folder ``path`` (model_index.json ``index``)."""
    for kind in reversed(list(GUIDANCE_KINDS)):
        if GUIDANCE_KINDS[kind].accepts(index):
            return kind
    cls = str(index.get("_class_name", ""))
    raise UserInputError(f"guidance model {path!r} ({cls or 'unknown pipeline'}) is neither a Stable Diffusion nor a "
                         f"pixel-space (DeepFloyd IF stage I) pipeline (no registered family accepts it: "
                         f"{', '.join(GUIDANCE_KINDS)})")
