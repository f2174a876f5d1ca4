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


# ------------------------------------------------------------------ commands that read a RUN: one stage check

def _copy(run, tmp_path, name="run"):
    import shutil

    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def _digests(run):
    import hashlib

    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in run.rglob("*") if p.is_file() and p.parent.name in ("coarse", "refine")}


def _readers(run, tmp_path):
    """Every command that reads a finished stage of RUN (refine reads coarse; export and render the asset)."""
    return {"export": ["export", str(run), "--output", str(tmp_path / "out.glb")],
            "render": ["render", str(run), "--format", "png", "--size", "16", "--views", "1", "--output", str(tmp_path / "r.png")]}


def test_render_refuses_an_unfinished_stage_like_export(tmp_path, finished_run):
    run = _copy(finished_run, tmp_path)
    (run / "refine" / "stage.json").write_text('{"stage": "refine", "finished": false}')
    for name, args in _readers(run, tmp_path).items():
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and "the refine stage of RUN" in r.output and "has not finished" in r.output, (name, r.output)
    assert not (tmp_path / "r.png").exists() and not (tmp_path / "out.glb").exists()


def test_render_refuses_a_refine_made_from_an_earlier_coarse_result(tmp_path, finished_run, tiny_configs):
    """The user's report: `coarse "a blue sphere" --out RUN` on a finished red-cube RUN, then `render RUN`."""
    run = _copy(finished_run, tmp_path)
    r = CliRunner().invoke(cli, ["coarse", "a blue sphere", "--out", str(run), "--config", tiny_configs["coarse"], "--quiet"])
    assert r.exit_code == 0, r.output
    messages = {}
    for name, args in _readers(run, tmp_path).items():
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and "was made from an earlier coarse result" in r.output, (name, r.output)
        messages[name] = r.output
    assert len(set(messages.values())) == 1  # one check, one message


def test_batch_resume_reruns_a_finished_prompt_whose_stages_changed(tmp_path, finished_run):
    from meshdream.batching.runner import _is_finished

    out = tmp_path / "batch"
    run = _copy(finished_run, out, "job")
    entry = {"status": "done", "run": "job", "asset": "job/export/model.glb"}
    assert _is_finished(entry, out)
    (run / "refine" / "texture.png").write_bytes((run / "refine" / "texture.png").read_bytes()[:-8])
    assert not _is_finished(entry, out)


def test_a_field_file_with_wrong_keys_is_a_clear_error(tmp_path, finished_run, tiny_configs):
    """A valid checkpoint that is not a coarse field, in a RUN without records (so nothing vouches for it) and in one
    whose record was re-hashed to match it."""
    import json

    import torch

    from meshdream.engine.checkpoint import load_checkpoint, save_checkpoint
    from meshdream.engine.provenance import _fingerprint, file_digest

    state = load_checkpoint(finished_run / "coarse" / "field.pt")["field"]
    wrong = [{"field": {"state": state["state"]}}, {"field": 3}, {}, {"field": {**state, "bound": "x"}},
             {"field": {**state, "config": {"kind": "bogus"}}}, {"field": {**state, "state": {"w": torch.zeros(2)}}},
             {"field": {**state, "config": {**state["config"], "hidden": 7}}}]
    for i, content in enumerate(wrong):
        for rehash in (False, True):
            run = _copy(finished_run, tmp_path, f"{i}-{rehash}")
            field = run / "coarse" / "field.pt"
            save_checkpoint(field, content)
            if rehash:
                record = json.loads((run / "coarse" / "stage.json").read_text())
                record["outputs"]["field.pt"] = file_digest(field)
                record["fingerprint"] = _fingerprint(record)
                (run / "coarse" / "stage.json").write_text(json.dumps(record))
            else:
                for p in run.glob("*/stage.json"):
                    p.unlink()
            r = CliRunner().invoke(cli, ["refine", str(run), "--config", tiny_configs["refine"], "--quiet"])
            assert r.exception is None or isinstance(r.exception, SystemExit), (content, r.output)
            assert r.exit_code == 1 and str(field) in r.output and "meshdream coarse PROMPT" in r.output, (i, rehash, r.output)
            assert "delete it" not in r.output


@pytest.mark.parametrize("output, fmt", [("coarse/mesh.ply", "ply"), ("refine/mesh.obj", "obj"), ("coarse/new.glb", "glb"),
                                         ("refine/previews/x.glb", "glb"), ("link/mesh.ply", "ply")])
def test_export_and_render_never_write_into_a_stage_folder(tmp_path, finished_run, output, fmt):
    run = _copy(finished_run, tmp_path)
    (run / "link").symlink_to(run / "coarse")  # a way in that is not spelled "coarse"
    before = _digests(run)
    r = CliRunner().invoke(cli, ["export", str(run), "--format", fmt, "--output", str(run / output)])
    assert r.exit_code == 2 and "stage folder" in r.output, r.output
    r = CliRunner().invoke(cli, ["render", str(run), "--format", "png", "--size", "16", "--views", "1",
                                 "--output", str(run / output).rsplit(".", 1)[0] + ".png"])
    assert r.exit_code == 2 and "stage folder" in r.output, r.output
    assert _digests(run) == before and not (run / "coarse" / "new.glb").exists()
    r = CliRunner().invoke(cli, ["export", str(run)])  # the RUN is still whole
    assert r.exit_code == 0, r.output
