import subprocess
import sys

from click.testing import CliRunner

from meshdream import __version__
from meshdream.cli import cli


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_help_lists_commands():
    r = CliRunner().invoke(cli, ["--help"])
    for cmd in ("coarse", "refine", "export", "generate"):
        assert cmd in r.output


def test_empty_prompt_is_usage_error():
    for args in (["coarse", "  ", "--out", "x"], ["generate", "", "--out", "x"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and "prompt is empty" in r.output


def test_bad_choices_are_usage_errors():
    r = CliRunner().invoke(cli, ["export", "run", "--format", "fbx"])
    assert r.exit_code == 2 and "fbx" in r.output and "glb" in r.output
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", "x", "--device", "tpu"])
    assert r.exit_code == 2 and "tpu" in r.output
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", "x", "--iters", "0"])
    assert r.exit_code == 2 and "--iters" in r.output


def test_cuda_without_device_is_usage_error():
    import torch

    if torch.cuda.is_available():
        return
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", "x", "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "meshdream", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
