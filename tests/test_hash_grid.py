import torch

from meshdream.nerf.hash_grid import HashGrid, HashGridConfig


def test_shapes_levels_and_gradients():
    grid = HashGrid(HashGridConfig(levels=6, features_per_level=2, log2_table_size=12, base_resolution=4, max_resolution=64))
    assert grid.resolution.tolist()[0] == 4 and grid.resolution.tolist()[-1] == 64
    assert grid.dense.tolist()[:2] == [True, True] and not grid.dense.tolist()[-1]  # coarse levels dense, fine hashed
    x = torch.rand(100, 3) * 2 - 1
    out = grid(x)
    assert out.shape == (100, 12)
    out.square().sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0
    assert torch.equal(grid(x), grid(x))


def test_dense_level_interpolates_trilinearly():
    grid = HashGrid(HashGridConfig(levels=1, features_per_level=1, log2_table_size=10, base_resolution=4, max_resolution=4))
    i, j, k = torch.meshgrid(*(torch.arange(5),) * 3, indexing="ij")
    with torch.no_grad():
        grid.table[(i + 5 * j + 25 * k).flatten(), 0] = (i + 2 * j + 3 * k).flatten().float()
    x = torch.rand(50, 3) * 2 - 1
    u = (x + 1) / 2 * 4
    assert torch.allclose(grid(x)[:, 0], u[:, 0] + 2 * u[:, 1] + 3 * u[:, 2], atol=1e-4)


def test_points_outside_the_bound_are_clamped():
    """A point outside [-bound, bound]^3 is encoded as the nearest point of the box (per axis), not wrapped
    or extrapolated: its features equal those at the clamped point and differ from the unclamped grid's."""
    grid = HashGrid(HashGridConfig(levels=2, log2_table_size=10, base_resolution=4, max_resolution=8), bound=2.0)
    with torch.no_grad():
        grid.table.uniform_(-1, 1)
    outside = torch.tensor([[5.0, -7.0, 0.3], [2.5, 1.0, -0.7], [-9.0, 9.0, 9.0]])
    assert torch.equal(grid(outside), grid(outside.clamp(-2.0, 2.0)))
    assert not torch.equal(grid(outside[:1]), grid(torch.tensor([[1.9, -1.9, 0.3]])))  # the box's face, not just inside it


# --- the C++ kernel (cpp/hash_grid.cpp) against the PyTorch reference ---------------------------------

import pytest  # noqa: E402

from meshdream import _C  # noqa: E402
from meshdream.nerf.hash_grid import _HashGridFunction, hash_grid_reference  # noqa: E402

# the coarse stage's grid (4 levels up to 32, the last one hashed) and a small one with more hashed levels
CONFIGS = [HashGridConfig(levels=4, max_resolution=32),
           HashGridConfig(levels=6, features_per_level=2, log2_table_size=10, base_resolution=3, max_resolution=40)]


def _pair(config: HashGridConfig, dtype=torch.float32, bound: float = 1.0, seed: int = 0):
    """The kernel-backed grid and a reference grid with the same (random, O(1)) table."""
    torch.manual_seed(seed)
    ours = HashGrid(config, bound, backend="cpp").to(dtype)
    ref = HashGrid(config, bound, backend="reference").to(dtype)
    with torch.no_grad():
        ours.table.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _points(n: int, bound: float = 1.0, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g, dtype=dtype) * 2.4 - 1.2) * bound  # some outside the box: clamped
    corners = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 0.5]], dtype=dtype) * bound
    return torch.cat([corners, x])


def test_auto_backend_uses_the_kernel_on_cpu_and_rejects_unknown_names():
    grid = HashGrid(CONFIGS[0])
    assert grid.backend == "auto"
    out = grid(torch.zeros(2, 3))
    assert out.grad_fn is not None and "HashGridFunction" in type(out.grad_fn).__name__
    with pytest.raises(ValueError, match="backend 'cuda-kernel'"):
        HashGrid(CONFIGS[0], backend="cuda-kernel")


def test_kernel_and_reference_share_the_state_dict_keys():
    assert HashGrid(CONFIGS[0]).state_dict().keys() == HashGrid(CONFIGS[0], backend="reference").state_dict().keys() == {"table"}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("bound", [1.0, 1.5])
def test_forward_matches_the_reference_on_random_points(config, bound):
    ours, ref = _pair(config, bound=bound)
    x = _points(5000, bound)
    a, b = ours(x), ref(x)
    assert a.shape == b.shape == (len(x), ours.output_dim)
    # same corners, weights and products; only the order of the 8-term sum may differ
    assert torch.allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_is_bit_identical_where_the_sum_is_exact(config):
    # points on a 1/16 lattice and a table of multiples of 1/4: every weight and product is exact, so
    # the features must agree bit for bit whatever the summation order (the index arithmetic is identical)
    ours, ref = _pair(config)
    with torch.no_grad():
        ours.table.copy_(torch.randint(-4, 5, ours.table.shape) / 4.0)
    ref.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 33, (4000, 3), generator=g) / 16.0 - 1.0
    assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("config", CONFIGS)
def test_table_gradient_matches_the_reference(config):
    ours, ref = _pair(config)
    x = _points(5000)
    grad_out = torch.randn(len(x), ours.output_dim, generator=torch.Generator().manual_seed(2))
    (ours(x) * grad_out).sum().backward()
    (ref(x) * grad_out).sum().backward()
    scale = ref.table.grad.abs().max()
    assert scale > 0
    assert torch.allclose(ours.table.grad, ref.table.grad, rtol=1e-5, atol=1e-5 * float(scale))


@pytest.mark.parametrize("config", CONFIGS)
def test_point_gradient_matches_the_reference(config):
    ours, ref = _pair(config, dtype=torch.float64, bound=1.3)
    x1 = _points(400, 1.3, torch.float64).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    grad_out = torch.randn(len(x1), ours.output_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (ours(x1) * grad_out).sum().backward()
    (ref(x2) * grad_out).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-10, atol=1e-10)


def test_gradcheck_in_float64():
    config = HashGridConfig(levels=2, features_per_level=2, log2_table_size=6, base_resolution=2, max_resolution=5)
    ours, ref = _pair(config, dtype=torch.float64)
    levels = (ref.resolution, ref.table_size, ref.offset, ref.dense)
    # points away from cell faces (finite differences of a piecewise-trilinear function need that)
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(8, 3, generator=g, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    table = ours.table.detach().clone().requires_grad_()

    def kernel(x, table):
        return _HashGridFunction.apply(x, table, ours._levels, ours.bound)

    assert torch.autograd.gradcheck(kernel, (x, table), eps=1e-6, atol=1e-6)
    # and the kernel's analytic Jacobian is the reference's
    jac_ours = torch.autograd.functional.jacobian(kernel, (x, table))
    jac_ref = torch.autograd.functional.jacobian(lambda x, t: hash_grid_reference(x, t, *levels, ours.bound), (x, table))
    for a, b in zip(jac_ours, jac_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_backward_is_deterministic():
    ours, _ = _pair(CONFIGS[0])
    x = _points(20000)
    grad_out = torch.randn(len(x), ours.output_dim, generator=torch.Generator().manual_seed(6))
    grads = []
    for _ in range(2):
        ours.table.grad = None
        (ours(x) * grad_out).sum().backward()
        grads.append(ours.table.grad.clone())
    assert torch.equal(grads[0], grads[1])


# numpy and the kernel only (no torch import): the subprocess starts fast
_THREADS_SCRIPT = """
import hashlib, numpy as np
from meshdream import _C
rng = np.random.default_rng(0)
levels = ([3, 5, 8, 14, 23, 40], [0, 64, 280, 1009, 2033, 3057], [64, 216, 729, 1024, 1024, 1024],
          [True, True, True, False, False, False])
x = rng.uniform(-1, 1, (3000, 3)).astype(np.float32)
table = rng.uniform(-1, 1, (4081, 2)).astype(np.float32)
grad_out = rng.standard_normal((3000, 12)).astype(np.float32)
grad_table, _ = _C.hash_grid_bwd_f32(x, table, grad_out, *levels, 1.0)
print(hashlib.sha256(grad_table.tobytes()).hexdigest())
"""


def test_backward_does_not_depend_on_the_thread_count():
    # levels are split across threads and each sums its points in order: 1 thread == 3 threads
    import os
    import subprocess
    import sys

    digests = []
    for threads in ("1", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        run = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True, check=True)
        digests.append(run.stdout.strip())
    assert len(digests[0]) == 64 and digests[0] == digests[1]
