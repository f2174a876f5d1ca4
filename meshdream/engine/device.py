"""Which torch device a run uses, and how many CPU threads."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..errors import MeshdreamError, UserInputError


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> CUDA when available, else the CPU; 'cpu' / 'cuda' as asked (UserInputError when CUDA is missing)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' was asked for but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise UserInputError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block and given back after it: a library call must
    not change the process's thread count (the float results of reductions depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# what lowers a stage's GPU memory, named in the out-of-memory message (config keys of that stage)
MEMORY_SETTINGS = {
    "coarse": "batch_size, resolution (NeRF render size), num_samples (per ray), nerf.hash_grid.log2_table_size",
    "refine": "batch_size, resolution (mesh render size), supersample, texture_size, max_faces",
}


def device_errors(stage: str):
    """Decorator: a CUDA out-of-memory or device error inside ``stage`` becomes a MeshdreamError
    (CLI: exit code 1, no traceback) that names the stage and the settings that lower memory."""
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except torch.OutOfMemoryError as e:
                raise MeshdreamError(
                    f"{stage}: the GPU ran out of memory ({_first_line(e)}). Lower {MEMORY_SETTINGS.get(stage, 'batch_size, resolution')} "
                    "in the stage's config (--config FILE), keep guidance.half_precision: true, or run with --device cpu; "
                    "continue with --resume from the last checkpoint") from None
            except RuntimeError as e:
                if not _is_device_error(e):
                    raise
                raise MeshdreamError(
                    f"{stage}: the CUDA device failed ({_first_line(e)}). Check the GPU with nvidia-smi; a smaller run "
                    f"({MEMORY_SETTINGS.get(stage, 'batch_size, resolution')}) or --device cpu may avoid it; "
                    "continue with --resume from the last checkpoint") from None

        return wrapper

    return deco


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _is_device_error(e: RuntimeError) -> bool:
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(e, accelerator_error):
        return True
    text = str(e)
    return any(k in text for k in ("CUDA error", "CUDA out of memory", "CUBLAS_STATUS", "cuDNN error", "CUDA driver",
                                    "device-side assert"))
