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


# ------------------------------------------------------------------ smaller slips of the same family

def test_a_damaged_texture_is_named_and_a_damaged_field_says_rerun_coarse(tmp_path, finished_run, tiny_configs):
    run = _copy(finished_run, tmp_path)
    texture = run / "refine" / "texture.png"
    texture.write_bytes(texture.read_bytes()[:60])
    for p in run.glob("*/stage.json"):
        p.unlink()  # nothing vouches for the files: the parsers meet the damage
    r = CliRunner().invoke(cli, ["export", str(run), "--output", str(tmp_path / "x.glb")])
    assert r.exit_code == 1 and str(texture) in r.output and "mesh.obj" not in r.output, r.output
    field = run / "coarse" / "field.pt"
    field.write_bytes(field.read_bytes()[:100])
    r = CliRunner().invoke(cli, ["refine", str(run), "--config", tiny_configs["refine"], "--quiet"])
    assert r.exit_code == 1 and str(field) in r.output and "meshdream coarse PROMPT" in r.output, r.output
    assert "delete it" not in r.output


def test_a_folder_of_the_users_own_files_is_not_offered_as_out(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8")
    for args in (["refine", str(folder)], ["export", str(folder)], ["render", str(folder)]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and "is not a meshdream RUN folder" in r.output, (args, r.output)
        assert f"--out {folder}" not in r.output and "NEW_FOLDER" in r.output, r.output
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]


def test_a_failed_obj_export_leaves_none_of_its_files(tmp_path):
    """A file-size limit makes the PNG's write fail the way a full disk does; the small MTL written before it must not stay."""
    code = (
        "import resource, signal, sys, numpy as np\n"
        "from pathlib import Path\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "from meshdream.asset.model import Asset\nfrom meshdream.asset.formats import write_asset\n"
        "from meshdream.errors import MeshdreamError\n"
        "v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32); f = np.array([[0, 1, 2]])\n"
        "tex = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)\n"
        "asset = Asset(v, f, uvs=v[:, :2].copy(), texture=tex)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
        "try:\n"
        "    write_asset(asset, Path(sys.argv[1]) / 'model.obj', 'obj')\n"
        "except MeshdreamError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "cannot write" in r.stdout and "File too large" in r.stdout, r.stdout + r.stderr
    assert os.listdir(tmp_path) == []


def test_the_output_extension_names_the_format(tmp_path, finished_run):
    import trimesh

    for args, words in ((["--format", "ply", "--output", str(tmp_path / "x.glb")], "ends in .glb but --format is ply"),
                        (["--output", str(tmp_path / "x.mesh")], "names no format"),
                        (["--format", "obj", "--output", str(tmp_path / "x")], "no extension")):
        r = CliRunner().invoke(cli, ["export", str(finished_run), *args])
        assert r.exit_code == 2 and words in r.output, (args, r.output)
    assert not list(tmp_path.iterdir())
    r = CliRunner().invoke(cli, ["export", str(finished_run), "--output", str(tmp_path / "x.ply")])  # the extension says ply
    assert r.exit_code == 0 and trimesh.load(tmp_path / "x.ply").vertices.shape[1] == 3, r.output
    assert (tmp_path / "x.ply").read_bytes().startswith(b"ply")
    r = CliRunner().invoke(cli, ["render", str(finished_run), "--format", "png", "--output", str(tmp_path / "r.gif")])
    assert r.exit_code == 2 and "ends in .gif but --format is png" in r.output, r.output


def test_a_read_only_output_is_left_as_it_was(tmp_path, finished_run):
    target = tmp_path / "model.glb"
    target.write_bytes(b"keep me")
    target.chmod(0o444)
    r = CliRunner().invoke(cli, ["export", str(finished_run), "--output", str(target)])
    assert r.exit_code == 2 and "read-only" in r.output, r.output
    assert target.read_bytes() == b"keep me" and (target.stat().st_mode & 0o777) == 0o444
    from meshdream.atomic_files import WriteError, atomic_write_bytes

    with pytest.raises(WriteError, match="read-only"):
        atomic_write_bytes(target, b"new")
    writable = tmp_path / "w.bin"
    writable.write_bytes(b"old")
    writable.chmod(0o640)
    atomic_write_bytes(writable, b"new")
    assert writable.read_bytes() == b"new" and (writable.stat().st_mode & 0o777) == 0o640  # a replaced file keeps its mode


def test_resume_cannot_record_fewer_steps_than_the_checkpoint_ran(tmp_path, coarse_run):
    run = _copy(coarse_run, tmp_path)
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(run), "--resume", "--quiet", "--iters", "3"])
    assert r.exit_code == 2 and "step 6" in r.output and "iters" in r.output, r.output
    assert "iters: 6" in (run / "coarse" / "config.yaml").read_text()


def test_iters_has_an_upper_bound(tmp_path):
    from meshdream.config import load_config
    from meshdream.errors import UserInputError
    from meshdream.stages.coarse import CoarseConfig

    path = tmp_path / "c.yaml"
    path.write_text(f"iters: {10**24}\n")
    with pytest.raises(UserInputError, match="iters"):  # (checked first: without a bound the command below runs for ever)
        load_config(CoarseConfig, str(path))
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "run"), "--iters", str(10**24)])
    assert r.exit_code == 2 and "--iters" in r.output and not (tmp_path / "run").exists(), r.output


def test_sigterm_says_which_checkpoint_is_kept(tmp_path, tiny_configs):
    cfg = yaml.safe_load(open(tiny_configs["coarse"]))
    cfg.update(iters=1000, checkpoint_every=2)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    proc = subprocess.Popen(cli_cmd("coarse", "a red cube", "--out", str(out), "--config", str(path), "--quiet"),
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "coarse" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # past the first checkpoint's last step (a signal during its rename cannot tell whether it landed)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert "terminated" in err and "is kept; continue with --resume" in err, err[-2000:]


def test_a_long_prompt_is_not_repeated_in_full(tiny_prior):
    from meshdream.guidance import load_guidance
    from meshdream.guidance.base import PromptTruncatedWarning

    guide = load_guidance(tiny_prior)
    with pytest.warns(PromptTruncatedWarning) as caught:
        guide.encode_prompt("a red cube " * 1000)
    assert all(len(str(w.message)) < 600 for w in caught), [len(str(w.message)) for w in caught]


def test_nul_and_control_characters_in_prompts_are_refused(tmp_path):
    from meshdream.errors import UserInputError
    from meshdream.guidance.base import check_prompt
    from meshdream.batching.prompts_file import read_prompts

    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"a red cube\na blue\x00 sphere\n")
    with pytest.raises(UserInputError, match="line 2"):
        read_prompts(prompts)
    with pytest.raises(UserInputError, match="control character"):
        check_prompt("a red\x00 cube")


def test_the_unknown_words_warning_is_printed_once_as_a_plain_message(tmp_path, tiny_configs):
    r = CliRunner().invoke(cli, ["generate", "a red teapot", "--out", str(tmp_path / "run"), "--coarse-config",
                                 tiny_configs["coarse"], "--refine-config", tiny_configs["refine"], "--quiet", "--no-video"])
    assert r.exit_code == 0, r.output
    assert r.output.count("does not know the word(s) 'teapot'") == 1, r.output
    assert "UnknownWordsWarning" not in r.output and ".py:" not in r.output, r.output


def test_run_files_that_crashed_the_mesh_code_are_clear_errors(tmp_path, finished_run, tiny_configs):
    """A vertex at 3e38 in the coarse PLY (refine), and for `export --faces --normal-map` a 1x1 texture, NaN uvs
    and a mesh whose faces have no area: exit 1 naming the file, no traceback. The RUNs have no records, so
    nothing vouches for the files."""
    import numpy as np
    import trimesh
    from PIL import Image

    def unrecorded(name):
        run = _copy(finished_run, tmp_path, name)
        for p in run.glob("*/stage.json"):
            p.unlink()
        return run

    def obj_lines(run, edit):
        lines = (run / "refine" / "mesh.obj").read_text().splitlines()
        (run / "refine" / "mesh.obj").write_text("\n".join(edit(lines)) + "\n")

    run = unrecorded("huge")
    mesh = trimesh.load(run / "coarse" / "mesh.ply", process=False)
    v = np.asarray(mesh.vertices).copy()
    v[0] = 3e38
    mesh.vertices = v
    (run / "coarse" / "mesh.ply").write_bytes(mesh.export(file_type="ply"))
    r = CliRunner().invoke(cli, ["refine", str(run), "--config", tiny_configs["refine"], "--quiet"])
    assert r.exit_code == 1 and str(run / "coarse" / "mesh.ply") in r.output, r.output

    cases = {"tiny-texture": lambda run: Image.new("RGB", (1, 1)).save(run / "refine" / "texture.png"),
             "nan-uv": lambda run: obj_lines(run, lambda ls: [("vt nan nan" if l.startswith("vt ") else l) for l in ls]),
             "flat": lambda run: obj_lines(run, lambda ls: [("v 0 0 0" if l.startswith("v ") else l) for l in ls])}
    for name, damage in cases.items():
        run = unrecorded(name)
        damage(run)
        r = CliRunner().invoke(cli, ["export", str(run), "--faces", "50", "--normal-map", "--output", str(tmp_path / f"{name}.glb")])
        assert r.exception is None or isinstance(r.exception, SystemExit), (name, repr(r.exception))
        assert r.exit_code == 1 and "refine" in r.output and "corrupted" in r.output, (name, r.output)


def test_a_refused_export_to_a_bare_file_name_leaves_the_working_folder_alone(tmp_path, monkeypatch):
    """`--output out.glb` has the folder "" (the working folder): a refusal must not remove it as a folder it made."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precious.txt").write_text("keep")
    for args in (["export", "no-such-run", "--output", "out.glb"], ["export", "no-such-run", "--output", "out.glb", "--format", "obj"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2, r.output
        assert (tmp_path / "precious.txt").read_text() == "keep"


def test_key_value_settings_on_resume_change_the_saved_config(tmp_path, coarse_run):
    """`--resume iters=8` continues the checkpoint with 8 steps; it is not compared as a whole default config."""
    run = _copy(coarse_run, tmp_path)
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(run), "--resume", "--quiet", "iters=8"])
    assert r.exit_code == 0, r.output
    assert "iters: 8" in (run / "coarse" / "config.yaml").read_text()
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(run), "--resume", "--quiet", "nerf.hidden=8"])
    assert r.exit_code == 2 and "nerf.hidden: 16 -> 8" in r.output and "num_samples" not in r.output, r.output
