"""The C++ kernels (``meshdream._C``, built from cpp/): which per-type build serves a tensor.

cpp/ builds each float kernel twice, ``NAME_f32`` and ``NAME_f64``; :func:`kernel` is the one place that
picks between them, and :data:`KERNEL_DTYPES` says which tensors a kernel can take at all.
"""
from __future__ import annotations

import torch

KERNEL_DTYPES = (torch.float32, torch.float64)  # the types cpp/ builds every float kernel for


def kernel(name: str, dtype: torch.dtype):
    """``meshdream._C.NAME_f64`` for float64 tensors, ``NAME_f32`` for the rest (they are converted)."""
    from .. import _C

    return getattr(_C, f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")
