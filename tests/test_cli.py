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


def test_cuda_without_device_is_usage_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", "x", "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "meshdream", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def _all_commands():
    return [cli] + list(cli.commands.values())


def test_every_option_has_help_and_main_help_shows_an_example():
    for cmd in _all_commands():
        for p in cmd.params:
            if hasattr(p, "help") and p.param_type_name == "option":
                assert p.help, f"{cmd.name} {p.opts} has no help text"
    r = CliRunner().invoke(cli, ["--help"])
    examples = [line for line in r.output.splitlines() if line.strip().startswith("meshdream ")]
    assert len(examples) == 3 and any("generate" in e for e in examples)


def test_prompt_that_looks_like_an_override_is_a_usage_error(tmp_path):
    for prompt in ("system.prompt_processor.prompt=a red cube", "iters=10"):
        r = CliRunner().invoke(cli, ["generate", prompt, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and "looks like" in r.output and 'meshdream generate "a red cube"' in r.output, r.output
        assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(cli, ["coarse", "iters=10", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "the setting iters" in r.output


def test_bad_overrides_are_usage_errors_and_leave_no_run(tmp_path):
    out = tmp_path / "run"
    for args, message in ((["guidance.scale=5"], "allowed keys in guidance"), (["iters=many"], "expected an integer"),
                          (["stray"], "KEY=VALUE"), (["wings=2"], "unknown config key wings")):
        for cmd in ("coarse", "generate"):
            r = CliRunner().invoke(cli, [cmd, "a red cube", "--out", str(out), "--quiet", *args])
            assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (cmd, args, r.output)
            assert not out.exists()
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(out), "--preset", "xl"])
    assert r.exit_code == 2 and "'xl' is not one of" in r.output and "sd" in r.output


def test_unloadable_model_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(out), "--guidance", str(tmp_path / "no-such-model"), "--quiet"])
    assert r.exit_code == 2 and not out.exists(), r.output
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(out), "--guidance", str(tmp_path / "no-such-model"), "--quiet"])
    assert r.exit_code == 2 and (out / "keep.txt").read_text() == "mine" and not (out / "coarse").exists()


def test_overrides_after_the_options_are_recorded_in_the_run(tmp_path, tiny_configs):
    import yaml

    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(out), "--config", tiny_configs["coarse"], "--quiet",
                                 "iters=3", "guidance.guidance_scale=7.5", "nerf.hidden=8"])
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((out / "coarse" / "config.yaml").read_text())
    assert saved["iters"] == 3 and saved["guidance"]["guidance_scale"] == 7.5 and saved["nerf"]["hidden"] == 8
    assert saved["resolution"] == 16  # the config file's value is kept underneath


def test_generate_refused_in_refine_keeps_the_finished_coarse_stage(tmp_path, tiny_configs):
    """A usage error after coarse finished removes only the new refine folder; the RUN and its coarse work stay."""
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["generate", "a red cube", "--out", str(out), "--coarse-config", tiny_configs["coarse"],
                                 "--refine-config", tiny_configs["refine"], "--quiet", "--no-video", "coarse.iters=2",
                                 f"refine.guidance.name={tmp_path / 'no-such-model'}"])
    assert r.exit_code == 2 and "no-such-model" in r.output and "Traceback" not in r.output, r.output
    assert (out / "coarse" / "stage.json").is_file() and (out / "coarse" / "mesh.ply").is_file()
    assert not (out / "refine").exists()
    r = CliRunner().invoke(cli, ["refine", str(out), "--config", tiny_configs["refine"], "--quiet", "iters=1"])
    assert r.exit_code == 0, r.output  # the kept coarse stage is usable: the run continues from it


def test_usage_error_before_any_work_leaves_no_run(tmp_path, tiny_configs):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["generate", "a red cube", "--out", str(out), "--coarse-config", tiny_configs["coarse"],
                                 "--quiet", f"coarse.guidance.name={tmp_path / 'no-such-model'}"])
    assert r.exit_code == 2 and not out.exists(), r.output
