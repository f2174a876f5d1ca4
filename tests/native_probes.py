"""Inputs that crashed meshdream._C (or gave silently wrong results) before its argument checks, one probe each.

Each probe returns "ValueError: ..." when the bad input is refused, or "ok" after asserting the now-documented
result. Run them in a child process (a crash must not take the caller with it):

    python tests/native_probes.py [NAME ...]     # default: all; prints "PROBE name" before and "RESULT name ..." after

tests/test_native_fuzz.py runs them this way; scripts/sanitize.sh runs them under AddressSanitizer, also against
an older build of cpp/ (``--cpp-from REV``) to show what each used to do. Probes in UNSAFE_BEFORE allocate
gigabytes when nothing refuses them; the sanitizer script leaves them out for old builds.
"""
from __future__ import annotations

import sys

import numpy as np

from meshdream import _C

f32 = np.float32
TRI = np.array([[0, 1, 2]], np.int32)


def _covering_raster(B: int, H: int, W: int) -> np.ndarray:
    """[B, H, W, 4] with every pixel on triangle 1 (id + 1 = 1) at u = v = 1/3."""
    r = np.zeros((B, H, W, 4), f32)
    r[..., :2] = 1 / 3
    r[..., 3] = 1
    return r


def _tri_pos(B: int) -> np.ndarray:
    p = np.array([[-0.9, -0.9, 0.0, 1.0], [0.9, -0.9, 0.0, 1.0], [-0.9, 0.9, 0.0, 1.0]], f32)
    return np.repeat(p[None], B, 0)


# --- texture -------------------------------------------------------------------------------------------------
def texture_empty_wrap():  # integer division by zero (SIGFPE) in the wrap modulo
    return _C.texture_fwd_f32(np.zeros((1, 0, 0, 3), f32), np.full((1, 4, 4, 2), 0.5, f32), 1, 0)


def texture_uv_last_dim_3():  # uv read as [.., 2]: out-of-bounds read
    return _C.texture_fwd_f32(np.zeros((1, 4, 4, 3), f32), np.zeros((1, 64, 64, 1), f32), 1, 0)


def texture_bwd_batch_mismatch():  # tex batch 2 for uv batch 8: heap writes past grad_tex's buffer
    return _C.texture_bwd_f32(np.ones((2, 16, 16, 4), f32), np.full((8, 16, 16, 2), 0.5, f32), np.ones((8, 16, 16, 4), f32), 1, 0)


def texture_bwd_short_grad():  # grad_out smaller than the output: out-of-bounds read
    return _C.texture_bwd_f32(np.ones((1, 4, 4, 3), f32), np.full((1, 32, 32, 2), 0.5, f32), np.ones((1, 2, 2, 3), f32), 1, 0)


def texture_filter_7():  # accepted before, silently treated as linear
    return _C.texture_fwd_f32(np.ones((1, 4, 4, 3), f32), np.full((1, 2, 2, 2), 0.5, f32), 7, 0)


def texture_boundary_9():  # accepted before, silently treated as zero
    return _C.texture_fwd_f32(np.ones((1, 4, 4, 3), f32), np.full((1, 2, 2, 2), 0.5, f32), 1, 9)


def texture_nan_uv_nearest():  # returned a real texel before; now NaN
    tex = np.arange(48, dtype=f32).reshape(1, 4, 4, 3)
    uv = np.full((1, 1, 2, 2), 0.5, f32)
    uv[0, 0, 0] = np.nan
    for boundary in (0, 1, 2):
        out = _C.texture_fwd_f32(tex, uv, 0, boundary)
        assert np.isnan(out[0, 0, 0]).all() and np.isfinite(out[0, 0, 1]).all(), out
    return "ok"


# --- antialias -----------------------------------------------------------------------------------------------
def antialias_rast_smaller_than_color():  # rast read at color's size: segfault / out-of-bounds read
    return _C.antialias_fwd_f32(np.ones((1, 64, 64, 3), f32), _covering_raster(1, 2, 2), _tri_pos(1), TRI)


def antialias_pos_batch_smaller():  # pos read at color's batch: out-of-bounds read
    return _C.antialias_fwd_f32(np.ones((4, 16, 16, 3), f32), _covering_raster(4, 16, 16), _tri_pos(1), TRI)


def antialias_bwd_short_grad():  # grad_out copied at color's size: out-of-bounds read
    return _C.antialias_bwd_f32(np.ones((1, 32, 32, 3), f32), _covering_raster(1, 32, 32), _tri_pos(1), TRI,
                                np.ones((1, 2, 2, 3), f32))


# --- interpolate ---------------------------------------------------------------------------------------------
def interpolate_rast_last_dim_1():  # rast read as [.., 4]: segfault / out-of-bounds read
    return _C.interpolate_fwd_f32(np.ones((1, 3, 2), f32), np.ones((1, 64, 64, 1), f32), TRI)


def interpolate_rast_last_dim_3():
    return _C.interpolate_fwd_f32(np.ones((1, 3, 2), f32), np.ones((1, 64, 64, 3), f32), TRI)


def interpolate_tri_two_columns():  # tri read as [F, 3]: out-of-bounds read
    return _C.interpolate_fwd_f32(np.ones((1, 3, 2), f32), _covering_raster(1, 4, 4), np.zeros((1, 2), np.int32))


def interpolate_bwd_batch_mismatch():  # attr batch 2 for rast batch 8: heap writes past the accumulation buffer
    return _C.interpolate_bwd_f32(np.ones((2, 3, 4), f32), _covering_raster(8, 16, 16), TRI, np.ones((8, 16, 16, 4), f32))


def interpolate_int64_index_wraps():  # an int64 index 2^32 + 2 became vertex 2
    return _C.interpolate_fwd_f32(np.ones((1, 3, 2), f32), _covering_raster(1, 4, 4), np.array([[0, 1, 2 ** 32 + 2]], np.int64))


# --- rasterize -----------------------------------------------------------------------------------------------
def rasterize_bwd_rast_batch_larger():  # no checks at all: pos read at rast's batch
    return _C.rasterize_bwd_f32(_tri_pos(1), TRI, _covering_raster(8, 16, 16), np.ones((8, 16, 16, 4), f32))


def rasterize_bwd_short_grad():
    return _C.rasterize_bwd_f32(_tri_pos(1), TRI, _covering_raster(1, 32, 32), np.ones((1, 2, 2, 4), f32))


def rasterize_far_vertex_is_drawn():  # a vertex at clip x = 1e20 dropped the triangle before
    pos = np.array([[[-1.0, -1.0, 0.0, 1.0], [1e20, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]], f32)
    rast = _C.rasterize_fwd_f32(pos, TRI, 8, 8)
    assert (rast[0, :, :, 3] == 1).all(), rast[0, :, :, 3]  # its top edge runs from (-1, 1) to (1e20, -1)
    return "ok"


def rasterize_non_finite_vertex_not_drawn():
    pos = _tri_pos(1).copy()
    for bad in (np.nan, np.inf):
        pos[0, 1, 0] = bad
        assert (_C.rasterize_fwd_f32(pos, TRI, 8, 8) == 0).all()
    return "ok"


def rasterize_20000_square():  # would allocate ~10 GB
    return _C.rasterize_fwd_f32(_tri_pos(1), TRI, 20000, 20000)


# --- hash grid -----------------------------------------------------------------------------------------------
def _points(n=64):
    return np.random.default_rng(0).uniform(-1, 1, (n, 3)).astype(f32)


def hash_grid_dense_cube_overflows():  # (res + 1)^3 wrapped negative, passed the check, then indexed far away
    res = 2 ** 21 - 1
    return _C.hash_grid_fwd_f32(_points(), np.zeros((8, 2), f32), [res], [0], [8], [True], 1.0)


def hash_grid_offset_plus_size_overflows():  # offset + size wrapped negative: rows = 0 < any table
    return _C.hash_grid_fwd_f32(_points(), np.zeros((8, 2), f32), [16], [2 ** 62], [2 ** 62], [False], 1.0)


def hash_grid_nan_point():  # a NaN coordinate cast to int64 (undefined); now NaN features
    x = _points(4)
    x[1, 0] = np.nan
    out = _C.hash_grid_fwd_f32(x, np.ones((4096, 2), f32), [4, 8], [0, 125], [125, 729], [True, True], 1.0)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2, 3]]).all()
    return "ok"


# --- marching cubes ------------------------------------------------------------------------------------------
def _sphere(n=8):
    g = np.linspace(-1, 1, n)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    return (0.6 - np.sqrt(x * x + y * y + z * z)).astype(f32)


def marching_cubes_nan_bounds():  # NaN vertices before
    return _C.marching_cubes(_sphere(), 0.0, (np.nan, 0.0, 0.0), (1.0, 1.0, 1.0))


def marching_cubes_inverted_bounds():  # every face turned inward before
    return _C.marching_cubes(_sphere(), 0.0, (1.0, 0.0, 0.0), (-1.0, 1.0, 1.0))


# --- the raster API (torch) ----------------------------------------------------------------------------------
def raster_api_int64_index_wraps():  # dr.rasterize narrowed int64 2^32 + 2 to vertex 2 and drew the triangle
    import torch

    import meshdream.raster as dr

    pos = torch.from_numpy(_tri_pos(1))
    return dr.rasterize(dr.get_context("cpu"), pos, torch.tensor([[0, 1, 2 ** 32 + 2]]), (8, 8))


def raster_api_texture_empty():
    import torch

    import meshdream.raster as dr

    return dr.texture(torch.zeros(1, 0, 0, 3), torch.rand(1, 4, 4, 2), filter_mode="linear", boundary_mode="wrap")


def raster_api_antialias_pos_batch():
    import torch

    import meshdream.raster as dr

    return dr.antialias(torch.ones(4, 16, 16, 3), torch.from_numpy(_covering_raster(4, 16, 16)), torch.from_numpy(_tri_pos(2)),
                        torch.from_numpy(TRI))


PROBES = {name: fn for name, fn in globals().items() if callable(fn) and not name.startswith("_") and fn.__module__ == __name__}
UNSAFE_BEFORE = {"rasterize_20000_square"}


def run(name: str) -> str:
    try:
        result = PROBES[name]()
    except ValueError as e:
        return f"ValueError: {e}"
    return result if isinstance(result, str) and result == "ok" else f"returned {type(result).__name__} (no error)"


def main(names: list[str]) -> None:
    for name in names or list(PROBES):
        print(f"PROBE {name}", flush=True)
        print(f"RESULT {name} {run(name)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
