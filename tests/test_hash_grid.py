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
    grid = HashGrid(HashGridConfig(levels=2, log2_table_size=10, base_resolution=4, max_resolution=8))
    assert torch.isfinite(grid(torch.tensor([[5.0, -7.0, 0.0]]))).all()
