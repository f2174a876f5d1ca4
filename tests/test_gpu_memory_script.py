"""scripts/gpu_memory.py's tracker: the CUDA code path makes the hash grid's intermediates visible, and the CUDA-only
temporaries of the table gradient's sort are counted."""
import importlib.util
from pathlib import Path

import torch

from meshdream.nerf import hash_grid, mlp
from meshdream.nerf.field import NeRFField
from meshdream.stages.coarse import CoarseConfig

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("gpu_memory", ROOT / "scripts" / "gpu_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _field_peak_per_point(gm, field: NeRFField, n: int) -> float:
    """Peak bytes above the parameters per point of one no-grad evaluation of n points [n, 3]."""
    x = torch.rand(n, 3) * 2 - 1
    tracker = gm.LiveBytes()
    with tracker, torch.no_grad():
        tracker.register(list(field.parameters()) + [x])
        base = tracker.current
        field(x)
    return (tracker.peak - base) / n


def test_the_cuda_code_path_shows_the_hash_grids_intermediates_and_is_undone():
    gm = _script()
    field = NeRFField(CoarseConfig().nerf)  # the default coarse field: 4 levels
    kernels = (hash_grid._use_kernel, mlp._use_kernel)
    with_kernels = _field_peak_per_point(gm, field, 4096)
    with gm.cuda_code_path():
        reference = _field_peak_per_point(gm, field, 4096)
    assert (hash_grid._use_kernel, mlp._use_kernel) == kernels
    # the C++ kernels show only their outputs (8 features + the MLP's 4 outputs, its hidden layers); the reference
    # keeps ~470 bytes per point and level alive (docs/gpu.md)
    assert with_kernels < 1000
    assert 4 * 400 < reference < 4 * 600


def test_the_table_gradients_sort_is_counted_for_the_ops_duration():
    gm = _script()
    table = torch.zeros(1000, 2, requires_grad=True)
    index = torch.randint(0, 1000, (100_000,))
    tracker = gm.LiveBytes()
    with tracker:
        table[index].sum().backward()
    assert tracker.peak >= 48 * index.numel()  # index_put with accumulate: 6 int64 buffers per index on CUDA
    tracker.sweep()
    assert tracker.current < 48 * index.numel()  # gone once the op returned
