import numpy as np
import pytest
import torch
import trimesh

from meshdream.errors import MeshdreamError
from meshdream.nerf.extract import ExtractConfig, density_grid, extract_mesh


class Blob(torch.nn.Module):
    def density(self, x):
        self.calls = getattr(self, "calls", 0) + len(x)
        return 10 * torch.exp(-(x ** 2).sum(-1) / (2 * 0.3 ** 2))

    def albedo(self, x):
        return torch.tensor([0.9, 0.1, 0.1]).expand(len(x), 3)


def test_coarse_to_fine_matches_dense_and_queries_less():
    f = Blob()
    grid, evaluated = density_grid(f.density, 96, 24, 4.0)
    lin = torch.linspace(-1, 1, 96)
    dense = f.density(torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).view(-1, 3)).view(96, 96, 96)
    assert evaluated < 0.3 * 96 ** 3
    assert torch.equal(grid > 4.0, dense > 4.0)
    near = (dense - 4.0).abs() < 1.0  # exact where it matters
    assert torch.allclose(grid[near], dense[near])


def test_extract_mesh_is_a_coloured_closed_sphere():
    v, f, c = extract_mesh(Blob(), ExtractConfig(resolution=64, coarse_resolution=16, threshold=4.0, target_faces=2000))
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight and m.volume > 0
    r = 0.3 * np.sqrt(2 * np.log(10 / 4.0))
    assert abs(np.linalg.norm(v, axis=1).mean() - r) < 0.02
    assert np.allclose(c, [0.9, 0.1, 0.1], atol=1 / 255)  # 8-bit vertex colours and len(f) <= 2000


def test_empty_surface_names_the_threshold():
    with pytest.raises(MeshdreamError, match=r"threshold 50.0.*peak density 9"):
        extract_mesh(Blob(), ExtractConfig(resolution=32, coarse_resolution=16, threshold=50.0))
