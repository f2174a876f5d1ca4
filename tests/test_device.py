"""Which device a run uses, and what a user reads when the device fails (meshdream/engine/device.py)."""
import shutil

import pytest
import torch
from click.testing import CliRunner

from meshdream.cli import cli
from meshdream.engine.device import MEMORY_SETTINGS, device_errors
from meshdream.errors import MeshdreamError


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: an illegal memory access was encountered"),
                                   RuntimeError("CUDA driver version is insufficient for CUDA runtime version"),
                                   torch.AcceleratorError("unspecified launch failure")])
def test_a_failing_cuda_device_is_a_clear_message(error):
    @device_errors("refine")
    def stage():
        raise error

    with pytest.raises(MeshdreamError) as e:
        stage()
    message = str(e.value)
    assert message.startswith(f"refine: the CUDA device failed ({str(error).splitlines()[0]})")
    assert "nvidia-smi" in message and MEMORY_SETTINGS["refine"] in message and "--resume" in message
    assert e.value.__cause__ is None and e.value.__suppress_context__  # the user sees the message, not a chain


def test_other_runtime_errors_keep_their_traceback():
    bug = RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)")

    @device_errors("coarse")
    def stage():
        raise bug

    with pytest.raises(RuntimeError) as e:
        stage()
    assert e.value is bug and not isinstance(e.value, MeshdreamError)


def test_device_failure_in_a_stage_exits_1_without_traceback(monkeypatch, tmp_path, tiny_configs):
    from meshdream.stages import coarse as coarse_mod

    def device_assert(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered\nCompile with TORCH_USE_CUDA_DSA to enable device-side assertions.")

    monkeypatch.setattr(coarse_mod, "load_guidance", device_assert)
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "run"), "--config", tiny_configs["coarse"],
                                 "--device", "cpu", "--quiet"])
    assert r.exit_code == 1, r.output
    assert "coarse: the CUDA device failed (CUDA error: device-side assert triggered)" in r.output
    assert "Traceback" not in r.output and "TORCH_USE_CUDA_DSA" not in r.output  # the first line only


def test_refine_out_of_memory_names_the_refine_settings(monkeypatch, tmp_path, coarse_run):
    """A CUDA OOM inside refine's loop: exit code 1, refine's own memory settings, how to continue."""
    from meshdream.stages import refine as refine_mod

    run = tmp_path / "run"
    shutil.copytree(coarse_run, run)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB (GPU 0; 23.6 GiB total capacity)")

    monkeypatch.setattr(refine_mod, "render_mesh", out_of_memory)
    r = CliRunner().invoke(cli, ["refine", str(run), "--device", "cpu", "--quiet", "iters=2", "resolution=16", "supersample=1",
                                 "texture_size=32", "max_faces=400"])
    assert r.exit_code == 1, r.output
    assert "refine: the GPU ran out of memory (CUDA out of memory. Tried to allocate 3.00 GiB" in r.output
    assert "batch_size, resolution (mesh render size), supersample, texture_size, max_faces" in r.output
    assert "--resume" in r.output and "Traceback" not in r.output
