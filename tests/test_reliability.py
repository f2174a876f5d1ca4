import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from meshdream.cli import cli


def cli_cmd(*args):
    return [sys.executable, "-m", "meshdream", *args]


def test_sigkill_at_a_random_step_then_resume_completes(tmp_path, tiny_configs):
    cfg = yaml.safe_load(open(tiny_configs["coarse"]))
    cfg.update(iters=30, checkpoint_every=2)
    cfg["extract"]["threshold"] = 0.5  # a random prior thins the blob; any surface will do here
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cli_cmd("coarse", "a red cube", "--out", str(out), "--config", str(path), "--quiet"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "coarse" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), proc.stderr.read().decode()[-2000:]
    time.sleep(random.uniform(0.0, 1.0))  # die somewhere after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(cli_cmd("coarse", "a red cube", "--out", str(out), "--resume", "--quiet"), env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "coarse" / "mesh.ply").is_file()
    assert not [p for p in os.listdir(out / "coarse") if p.endswith(".tmp")]  # no half-written files left behind


def test_corrupted_checkpoint_is_a_clear_error_and_never_used(tmp_path, coarse_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(coarse_run, run)
    ckpt = run / "coarse" / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x55
    ckpt.write_bytes(bytes(data))
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(run), "--resume"])
    assert r.exit_code == 1
    assert "corrupted" in r.output and str(ckpt) in r.output and "Traceback" not in r.output
    assert ckpt.read_bytes() == bytes(data)  # left as it was for the user to inspect


def test_non_finite_loss_is_reported_with_the_step(tmp_path, tiny_configs, monkeypatch):
    from meshdream.guidance.pixel import PixelGuidance

    real = PixelGuidance.sds_loss
    calls = [0]

    def poisoned(self, *args, **kwargs):  # fault injection: the guidance returns NaN on its 3rd call
        out = real(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(PixelGuidance, "sds_loss", poisoned)
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "run"), "--config", tiny_configs["coarse"], "--quiet"])
    assert r.exit_code == 1 and "nan at step 2" in r.output and "--resume" in r.output


def test_unwritable_output_fails_before_any_work(tmp_path, tiny_configs):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args in (["generate", "a red cube", "--out", str(blocker / "run")],
                 ["coarse", "a red cube", "--out", str(blocker / "run"), "--config", tiny_configs["coarse"]]):
        t = time.time()
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and "not writable" in r.output
        assert time.time() - t < 5


def test_non_finite_guidance_gradient_stops_the_run_with_t_and_scale(tmp_path, tiny_configs):
    """A huge but finite guidance scale overflows the guided eps to inf: the run stops, it does not zero the gradient."""
    cfg = yaml.safe_load(open(tiny_configs["coarse"]))
    cfg["guidance"]["guidance_scale"] = 1e300
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "run"), "--config", str(path), "--quiet"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "guidance gradient is not finite" in r.output and "t = " in r.output and "guidance scale 1e+300" in r.output


def test_interrupt_says_which_checkpoint_is_kept(tmp_path, tiny_configs):
    from meshdream.engine.stage_loop import step_hook

    def ctrl_c_after(n):
        def hook(stage, done):
            if done == n:
                raise KeyboardInterrupt
        return hook

    args = ["coarse", "a red cube", "--out", str(tmp_path / "run"), "--config", tiny_configs["coarse"], "--quiet"]
    with step_hook(ctrl_c_after(1)):  # before the first checkpoint (every 2 steps): nothing to resume from
        r = CliRunner().invoke(cli, args)
    assert r.exit_code == 130 and "no checkpoint was written yet" in r.output and "--resume" not in r.output, r.output
    with step_hook(ctrl_c_after(3)):
        r = CliRunner().invoke(cli, args)
    assert r.exit_code == 130 and "checkpoint of step 2 is kept; continue with --resume" in r.output, r.output


def test_a_full_disk_is_a_clear_error_naming_the_file(tmp_path):
    """A file-size limit makes writes fail the way a full disk does (the kernel refuses the bytes)."""
    code = (
        "import resource, signal, sys, torch\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from meshdream.engine.checkpoint import save_checkpoint\n"
        "from meshdream.errors import MeshdreamError\n"
        "try:\n"
        "    save_checkpoint(sys.argv[1], {'w': torch.zeros(100000)})\n"
        "except MeshdreamError as e:\n"
        "    print(e)\n"
    )
    target = tmp_path / "checkpoint.pt"
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"cannot write {str(target)!r}" in r.stdout and "File too large" in r.stdout, r.stdout + r.stderr
    assert os.listdir(tmp_path) == []  # no half-written temporary left behind


def test_a_checkpoint_that_does_not_fit_the_stage_is_a_clear_error(tmp_path, coarse_run):
    import shutil

    import torch

    from meshdream.engine.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(coarse_run, run)
    ckpt = run / "coarse" / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    state.update(done=False, step=4)
    key = next(iter(state["field"]["state"]))
    state["field"]["state"][key] = torch.zeros(3)  # plain data, wrong shape
    save_checkpoint(ckpt, state)
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(run), "--resume", "--quiet"])
    assert r.exit_code == 1 and "does not fit this coarse stage" in r.output and str(ckpt) in r.output, r.output
    save_checkpoint(ckpt, {"stage": "refine", "step": 1, "config": {}, "rng": {}})
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(run), "--resume", "--quiet"])
    assert r.exit_code == 1 and "is not a coarse checkpoint" in r.output, r.output
