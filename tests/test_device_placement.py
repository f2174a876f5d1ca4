"""Device placement: a few coarse and refine steps with every tensor on a device that is not the CPU.

A CUDA run used to crash before its first step (the occupancy grid fed CPU points to the field and
indexed a CPU mask with device indices; the texture baker convolved a device texture with a CPU
kernel). These tests run the real stage functions on the fake device of ``fake_device.py`` (values on
the CPU, placement checked op by op by FakeTensorMode's device rules), so any such mix fails here on a
CPU-only machine. The parts only a real GPU can check (fp16, nvdiffrast) are the ``cuda`` tests.
"""
import sys

import pytest
import torch
import yaml

import meshdream
from fake_device import DEVICE, DeviceMixError, fake_device
from tiny_models import save_tiny_stable_diffusion


@pytest.fixture
def on_fake_device(monkeypatch):
    """Stages resolve their device to the fake one (wherever resolve_device was imported by name)."""

    def resolve(device=None):
        return DEVICE

    from meshdream.engine import device

    original = device.resolve_device
    for name, module in list(sys.modules.items()):
        if name.startswith("meshdream") and getattr(module, "resolve_device", None) is original:
            monkeypatch.setattr(module, "resolve_device", resolve)
    with fake_device():
        yield


def test_fake_device_catches_the_mixes_a_gpu_refuses():
    with fake_device():
        x = torch.ones(4, device=DEVICE)
        with pytest.raises(DeviceMixError):
            x + torch.ones(4)  # CPU tensor with a device tensor
        with pytest.raises(DeviceMixError):
            torch.zeros(4, dtype=torch.bool)[torch.tensor([0, 1], device=DEVICE)]  # CPU mask, device indices
        assert (x + torch.tensor(2.0)).device == DEVICE  # 0-dim CPU scalars are fine, as on CUDA
        assert x[torch.tensor([0, 1])].device == DEVICE  # CPU indices into a device tensor are fine
        with pytest.raises(TypeError):
            x.numpy()
        w = torch.nn.Linear(4, 2).to(DEVICE)
        w(x[None]).sum().backward()
        assert w.weight.grad.device == DEVICE and float(x.sum()) == 4.0


def test_occupancy_grid_follows_the_field(on_fake_device):
    from meshdream.nerf.field import FieldConfig, NeRFField
    from meshdream.nerf.hash_grid import HashGridConfig
    from meshdream.nerf.volume_render import OccupancyGrid

    field = NeRFField(FieldConfig(hash_grid=HashGridConfig(levels=2, log2_table_size=8, max_resolution=8), hidden=8)).to(DEVICE)
    grid = OccupancyGrid(resolution=4, device=DEVICE)
    grid.update(field.density, torch.Generator().manual_seed(0))
    occupied = grid.occupied(torch.zeros(5, 3, device=DEVICE))
    assert occupied.device == DEVICE and bool(occupied.all())
    grid.load_state_dict(grid.state_dict())
    assert grid.occupied(torch.zeros(2, 3, device=DEVICE)).device == DEVICE


def test_coarse_and_refine_steps_on_a_device(on_fake_device, tmp_path, tiny_configs):
    """Embedded-prior-style pixel guidance for coarse, tiny Stable Diffusion (latents) for refine."""
    from meshdream.engine.checkpoint import load_checkpoint

    run = tmp_path / "run"
    with open(tiny_configs["coarse"]) as f:
        coarse_cfg = yaml.safe_load(f)
    coarse_cfg.update(iters=2, checkpoint_every=1)
    (tmp_path / "coarse.yaml").write_text(yaml.safe_dump(coarse_cfg))
    mesh = meshdream.coarse("a red cube", run, config=str(tmp_path / "coarse.yaml"), progress=False)
    assert mesh.is_file()

    sd = save_tiny_stable_diffusion(str(tmp_path / "sd"))
    with open(tiny_configs["refine"]) as f:
        refine_cfg = yaml.safe_load(f)
    refine_cfg.update(iters=2, checkpoint_every=1, guidance={"name": sd}, resolution=32, texture_size=32)
    (tmp_path / "refine.yaml").write_text(yaml.safe_dump(refine_cfg))
    obj = meshdream.refine(run, config=str(tmp_path / "refine.yaml"), progress=False)
    assert obj.is_file()
    state = load_checkpoint(run / "refine" / "checkpoint.pt")
    assert state["done"] and state["texture_logits"].device.type == "cpu"  # checkpoints hold CPU tensors


def test_out_of_memory_is_a_clear_message(monkeypatch, tmp_path, tiny_configs):
    """A CUDA OOM inside a stage: exit code 1, the stage and the settings that lower memory, no traceback."""
    from click.testing import CliRunner

    from meshdream.cli import cli
    from meshdream.stages import coarse as coarse_mod

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total capacity)")

    monkeypatch.setattr(coarse_mod, "load_guidance", out_of_memory)
    result = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "run"), "--config", tiny_configs["coarse"],
                                      "--device", "cpu", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "coarse: the GPU ran out of memory" in result.output and "batch_size" in result.output
    assert "num_samples" in result.output and "Traceback" not in result.output
