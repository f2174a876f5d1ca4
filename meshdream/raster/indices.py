"""Triangle index tensors as the rasteriser takes them: int32, range-checked before they are narrowed."""
from __future__ import annotations

import torch

INT32_LIMIT = 2 ** 31  # indices must be below this to fit in int32


def int32_triangles(tri, num_vertices: int | None = None, name: str = "tri") -> torch.Tensor:
    """tri [F, 3] of any integer dtype (tensor or array) -> the same indices as int32 [F, 3] on the same device.

    Every index is checked against [0, num_vertices) (against int32's range when num_vertices is None) before the
    conversion, so an int64 index 2^32 + 3 is an error instead of vertex 3. ValueError names ``name``, the bad
    index and the allowed range. No copy when ``tri`` already is an int32 tensor.
    """
    if not isinstance(tri, torch.Tensor):
        tri = torch.as_tensor(tri)
    if tri.dtype.is_floating_point or tri.dtype.is_complex or tri.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer vertex indices, got dtype {tri.dtype}")
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise ValueError(f"{name} must be [F, 3] (three vertex indices per triangle), got shape {tuple(tri.shape)}")
    limit = INT32_LIMIT if num_vertices is None else min(int(num_vertices), INT32_LIMIT)
    if tri.numel() and not (tri.dtype == torch.int32 and limit == INT32_LIMIT):
        wide = tri if tri.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) else _as_int64(tri, name)
        lo, hi = int(wide.min()), int(wide.max())
        if lo < 0 or hi >= limit:
            bad = lo if lo < 0 else hi
            where = "(indices must fit in int32)" if num_vertices is None or limit < num_vertices else f"(V = {num_vertices} vertices)"
            raise ValueError(f"{name} holds vertex index {bad} outside [0, {limit}) {where}")
    return tri.to(torch.int32)


def _as_int64(tri: torch.Tensor, name: str) -> torch.Tensor:
    """Unsigned 16 / 32 / 64-bit indices as int64 (torch has few ops for them); uint64 values >= 2^63 are refused."""
    values = tri.cpu().numpy()
    if values.size and int(values.max()) >= 2 ** 63:
        raise ValueError(f"{name} holds vertex index {int(values.max())} outside int64")
    return torch.from_numpy(values.astype("int64"))
