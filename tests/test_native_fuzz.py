"""Fuzz of the raster API and of meshdream._C: whatever the shapes, dtypes and values (NaN / inf, huge and empty
sizes, mismatched batches), a call ends in a ValueError or a correct result, never in a crash. Plus every input
that used to crash the process (tests/native_probes.py), run in a child process so that a regression fails a test
instead of killing pytest.

The examples are derandomised (the same ones every run, so the suite is deterministic) and few (the whole file
takes seconds); scripts/sanitize.sh runs this file under AddressSanitizer + UBSan, where any out-of-bounds access
aborts. MemoryError is accepted only where an argument has a zero-sized axis next to a huge one (an empty array can
describe an output no machine can allocate: a clean exception, not a crash).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshdream.raster as dr
from meshdream import _C
from meshdream.raster import reference

sys.path.insert(0, str(Path(__file__).parent))
import native_probes  # noqa: E402

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
CPU = dr.get_context("cpu")
SMALL = [0, 1, 2, 3, 5]
SPECIALS = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0]


# --- the raster API: valid-ish scenes with random defects, checked against the reference backend -----------------
def _values(rng, shape, special_rate):
    a = rng.normal(size=shape)
    if special_rate and a.size:
        mask = rng.random(shape) < special_rate
        a[mask] = rng.choice(SPECIALS, size=int(mask.sum()))
    return a


@FUZZ
@given(seed=st.integers(0, 2 ** 32 - 1), B=st.sampled_from([1, 2]), V=st.sampled_from([0, 3, 7]), F=st.sampled_from([0, 1, 6]),
       H=st.sampled_from([1, 4, 7]), W=st.sampled_from([1, 5, 8]), special=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
       pos_dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64]),
       tri_dtype=st.sampled_from([torch.int32, torch.int64, torch.float32]),
       defect=st.sampled_from(["none", "none", "none", "tri_range", "attr_batch", "tex_shape", "uv_shape", "rast_size",
                               "pos_batch", "resolution"]))
def test_raster_api_gives_value_errors_or_the_reference_result(seed, B, V, F, H, W, special, pos_dtype, tri_dtype, defect):
    rng = np.random.default_rng(seed)
    pos = _values(rng, (B, V, 4), special)
    pos[..., 3] = np.abs(pos[..., 3]) + 0.5 if not special else pos[..., 3]
    pos = torch.from_numpy(pos).to(pos_dtype)
    tri = torch.from_numpy(rng.integers(0, max(V, 1), (F, 3))).to(tri_dtype)
    if defect == "tri_range" and F:  # 2^32 + 1 only where the index dtype holds it
        wide = tri.dtype in (torch.int64, torch.float32)
        tri[rng.integers(F), rng.integers(3)] = int(rng.choice([-1, V, 2 ** 32 + 1] if wide else [-1, V]))
    elif defect == "tri_range":
        defect = "none"  # no triangle to corrupt
    resolution = (H, W) if defect != "resolution" else tuple(rng.choice([0, -3, 16385, 2 ** 40], 2).tolist())
    valid_pos = pos.is_floating_point() and not tri.is_floating_point()
    try:
        rast, _ = dr.rasterize(CPU, pos, tri, resolution)
    except ValueError:
        return
    assert valid_pos and defect not in ("tri_range", "resolution")
    assert rast.shape == (B, H, W, 4)
    ids = rast[..., 3]
    assert torch.equal(ids, ids.round()) and bool(((ids >= 0) & (ids <= F)).all())
    covered = ids > 0
    if bool(covered.any()):
        uvz = rast[covered][:, :3].double()
        assert bool(torch.isfinite(uvz).all()) and bool((uvz[:, 2].abs() <= 1).all())
        assert bool((uvz[:, :2] >= -1e-3).all()) and bool((uvz[:, :2].sum(-1) <= 1 + 1e-3).all())
    bad_tri = ~torch.isfinite(pos.double())[:, tri.long()].all(-1).all(-1) if F and V else torch.zeros(B, F, dtype=torch.bool)
    for b in range(B):  # triangles with a NaN / infinite coordinate are not drawn
        drawn = ids[b][ids[b] > 0].long() - 1
        assert not bool(bad_tri[b][drawn].any())
    if pos.dtype == torch.float64 and not special:
        assert torch.equal(ids, dr.rasterize(dr.get_context("cpu", "reference"), pos, tri, (H, W))[0][..., 3])

    attr = torch.from_numpy(_values(rng, (B if defect != "attr_batch" else 3, V, 2), special))
    try:
        uv, _ = dr.interpolate(attr, rast, tri) if defect != "rast_size" else dr.interpolate(attr, rast[..., :3], tri)
    except ValueError:
        assert defect in ("attr_batch", "rast_size") and (defect != "attr_batch" or B != 3)
        return
    assert defect not in ("attr_batch", "rast_size") or (defect == "attr_batch" and B == 3)
    expected = reference.interpolate(attr, rast.to(attr.dtype), tri) if F else torch.zeros(B, H, W, 2, dtype=attr.dtype)
    assert uv.shape == (B, H, W, 2) and torch.allclose(uv, expected, rtol=1e-5, atol=1e-6, equal_nan=True)

    tex = torch.rand(1, 4, 3, 3, dtype=torch.float64) if defect != "tex_shape" else torch.rand(1, 0, 3, 3, dtype=torch.float64)
    mode = ["wrap", "clamp", "zero"][seed % 3]
    filt = ["linear", "nearest"][seed % 2]
    sample_at = uv if defect != "uv_shape" else uv[..., :1]
    try:
        colour = dr.texture(tex, sample_at, filter_mode=filt, boundary_mode=mode)
    except ValueError:
        assert defect in ("tex_shape", "uv_shape")
        return
    assert defect not in ("tex_shape", "uv_shape")
    finite = torch.isfinite(uv).all(-1) & (uv.abs() < 1e6).all(-1)
    if bool(finite.any()):
        ref = reference.texture(tex, torch.where(finite[..., None], uv, torch.zeros_like(uv)), filt, mode)
        assert torch.allclose(colour[finite], ref[finite], atol=1e-9)
    assert bool(torch.isnan(colour[~torch.isfinite(uv).all(-1)]).all())  # a NaN / infinite uv samples NaN

    colour = colour.float().requires_grad_()
    p = pos.float().requires_grad_() if pos.is_floating_point() else pos
    p_in = p if defect != "pos_batch" else p[:1].expand(B + 1, -1, -1)
    try:
        out = dr.antialias(colour, rast.float(), p_in, tri)
    except ValueError:
        assert defect == "pos_batch"
        return
    assert defect != "pos_batch" and out.shape == colour.shape
    out.sum().backward()
    assert colour.grad.shape == colour.shape and p.grad.shape == p.shape


# --- meshdream._C directly: every entry point with perturbed shapes, dtypes, values and sizes -------------------
KERNELS = ["rasterize_fwd", "rasterize_bwd", "interpolate_fwd", "interpolate_bwd", "texture_fwd", "texture_bwd", "antialias_fwd",
           "antialias_bwd", "hash_grid_fwd", "hash_grid_bwd", "mlp_fwd", "mlp_bwd", "marching_cubes"]
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64]
INTS = [-1, 0, 1, 2, 3, 7, 9, 16385, 2 ** 31, 2 ** 40, 2 ** 62]


class Draw:
    """Arguments of one call: nominal shapes and dtypes, each perturbed with probability `rate`."""

    def __init__(self, rng, rate, dtype):
        self.rng, self.rate, self.dtype, self.huge = rng, rate, dtype, False

    def flip(self):
        return self.rng.random() < self.rate

    def array(self, shape, dtype=None, ints_below=None):
        shape = list(shape)
        if self.flip():  # wrong ndim
            shape = shape[:-1] if shape and self.rng.random() < 0.5 else shape + [int(self.rng.choice(SMALL))]
        if shape and self.flip():  # a wrong extent
            shape[self.rng.integers(len(shape))] = int(self.rng.choice(SMALL + [7]))
        if shape and self.flip() and 0 in shape:  # huge but empty
            shape[self.rng.integers(len(shape))] = int(self.rng.choice([2 ** 40, 2 ** 62]))
            self.huge = 0 in shape
        dtype = dtype or self.dtype
        if self.flip():
            dtype = self.rng.choice(DTYPES)
        if ints_below is not None:
            a = self.rng.integers(-1 if self.flip() else 0, max(ints_below, 1) + (3 if self.flip() else 0), shape)
        else:
            a = self.rng.normal(size=shape)
            if self.flip() and a.size:
                a.flat[self.rng.integers(a.size)] = self.rng.choice(SPECIALS)
        if 0 in shape and max(shape) > 2 ** 20:
            return np.zeros(shape, dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN / 1e30 into integer dtypes: any value will do
            return a.astype(dtype)

    def int(self, nominal):
        return int(self.rng.choice(INTS)) if self.flip() else nominal


def _c_call(name, d: Draw, s: str):
    B, V, F, H, W, C = 2, 5, 4, 6, 7, 3
    rng = d.rng
    pos = lambda: d.array((B, V, 4))  # noqa: E731
    tri = lambda: d.array((F, 3), np.int32, ints_below=V)  # noqa: E731

    def rast():
        r = d.array((B, H, W, 4))
        if r.ndim == 4 and r.shape[-1] == 4 and r.dtype.kind == "f":
            r[..., 3] = rng.choice([0, 1, 2, 3, 4, 5, -1, np.nan, 1e30], size=r.shape[:-1])
        return r

    f = getattr(_C, f"{name}_{s}") if name != "marching_cubes" else _C.marching_cubes
    if name == "rasterize_fwd":
        return f(pos(), tri(), d.int(H), d.int(W))
    if name == "rasterize_bwd":
        return f(pos(), tri(), rast(), d.array((B, H, W, 4)))
    if name == "interpolate_fwd":
        return f(d.array((1, V, C)), rast(), tri())
    if name == "interpolate_bwd":
        return f(d.array((B, V, C)), rast(), tri(), d.array((B, H, W, C)))
    if name == "texture_fwd":
        return f(d.array((1, 4, 3, C)), d.array((B, H, W, 2)) * 2, d.int(1), d.int(0))
    if name == "texture_bwd":
        return f(d.array((B, 4, 3, C)), d.array((B, H, W, 2)) * 2, d.array((B, H, W, C)), d.int(0), d.int(2))
    if name == "antialias_fwd":
        return f(d.array((B, H, W, C)), rast(), pos(), tri())
    if name == "antialias_bwd":
        return f(d.array((B, H, W, C)), rast(), pos(), tri(), d.array((B, H, W, C)))
    levels = ([d.int(2), d.int(6)], [d.int(0), d.int(27)], [d.int(27), d.int(64)], [True, bool(rng.random() < 0.5) if d.flip() else False])
    bound = float(rng.choice([1.0, 1.0, 0.0, -1.0, np.nan, np.inf])) if d.flip() else 1.0
    if name == "hash_grid_fwd":
        return f(d.array((9, 3)), d.array((91, 2)), *levels, bound, threads=d.int(0))
    if name == "hash_grid_bwd":
        return f(d.array((9, 3)), d.array((91, 2)), d.array((9, 4)), *levels, bound, True, True, threads=d.int(0))
    layers = [d.array((16, 8)), d.array((4, 16))], [d.array((16,)), d.array((4,))]
    if name == "mlp_fwd":
        return f(d.array((9, 8)), *layers, threads=d.int(0))
    if name == "mlp_bwd":
        return f(d.array((9, 8)), *layers, d.array((9, 4)), True, threads=d.int(0))
    lo = tuple(rng.choice([-1.0, 1.0, np.nan, np.inf], 3)) if d.flip() else (-1.0, -1.0, -1.0)
    return f(d.array((5, 4, 6)), float(rng.choice([0.0, np.nan, 1e39])) if d.flip() else 0.0, lo, (1.0, 1.0, 1.0))


@FUZZ
@given(seed=st.integers(0, 2 ** 32 - 1), name=st.sampled_from(KERNELS), s=st.sampled_from(["f32", "f64"]),
       rate=st.sampled_from([0.0, 0.1, 0.3]))
def test_c_kernels_give_value_errors_or_results(seed, name, s, rate):
    d = Draw(np.random.default_rng(seed), rate, np.float32 if s == "f32" else np.float64)
    try:
        result = _c_call(name, d, s)
    except ValueError as e:
        assert rate > 0, e  # nominal calls are valid
        return
    except MemoryError:
        assert d.huge
        return
    outputs = result if isinstance(result, tuple) else (result,)
    for o in outputs:
        assert o is None or isinstance(o, (np.ndarray, list))


def test_nominal_c_calls_succeed():
    """The fuzz's unperturbed calls are valid: so its ValueErrors come from the perturbations."""
    for name in KERNELS:
        for s in ("f32", "f64"):
            _c_call(name, Draw(np.random.default_rng(0), 0.0, np.float32 if s == "f32" else np.float64), s)


# --- inputs that used to crash, each in a child process ---------------------------------------------------------
EXPECTED_OK = {"texture_nan_uv_nearest", "rasterize_far_vertex_is_drawn", "rasterize_non_finite_vertex_not_drawn",
               "hash_grid_nan_point"}


@pytest.fixture(scope="module")
def probe_results():
    """{probe: RESULT text or 'CRASH: ...'}: one worker process runs the probes; when one kills it, that probe is
    recorded and a new worker carries on with the rest."""
    remaining, results = list(native_probes.PROBES), {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(_C.__file__).parent.parent),
                                                                   os.environ.get("PYTHONPATH")])))
    while remaining:
        proc = subprocess.run([sys.executable, str(Path(native_probes.__file__)), *remaining], capture_output=True, text=True,
                              env=env, timeout=300)
        started = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                name, text = line[7:].split(" ", 1)
                results[name] = text
        if proc.returncode != 0:
            crashed = started[-1] if started else remaining[0]
            results[crashed] = f"CRASH (exit {proc.returncode}): {proc.stderr[-2000:]}"
        remaining = [n for n in remaining if n not in results]
    return results


@pytest.mark.parametrize("name", list(native_probes.PROBES))
def test_input_that_crashed_the_process_is_refused_or_handled(name, probe_results):
    result = probe_results[name]
    if name in EXPECTED_OK:
        assert result == "ok", result
    else:
        assert result.startswith("ValueError: "), result
