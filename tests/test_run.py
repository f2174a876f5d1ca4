import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from meshdream.errors import UserInputError
from meshdream.engine.run import RunDir, RunLockedError, run_lock

HOLD = textwrap.dedent("""
    import sys, time
    from meshdream.engine.run import run_lock
    with run_lock(sys.argv[1], "coarse"):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding RUN's lock for its coarse stage."""
    run = RunDir.create(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run.root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    proc.kill()
    proc.wait()


def test_a_second_process_is_refused_naming_the_holder(holder):
    run, proc = holder
    with pytest.raises(RunLockedError, match=rf"process {proc.pid} on host {socket.gethostname()} is running the coarse stage"):
        with run_lock(run.root, "refine"):
            pass


def test_the_lock_dies_with_its_holder(holder):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with run_lock(run.root, "refine"):
        pass


def test_lock_is_reentrant_within_a_process(tmp_path):
    run = RunDir.create(tmp_path / "run")
    with run_lock(run.root, "generate"):
        with run_lock(run.root, "coarse"):
            pass
        with run_lock(run.root, "refine"):
            pass
    assert not (run.root / ".meshdream.lock.json").exists()


def test_a_non_run_folder_with_files_is_refused(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "turntable.gif").write_bytes(b"mine")
    with pytest.raises(UserInputError, match="not a meshdream RUN"):
        RunDir.create(folder)
    assert os.listdir(folder) == ["turntable.gif"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert RunDir.create(empty).root == empty  # an empty folder becomes a RUN ...
    (empty / "notes.txt").write_text("mine")
    assert RunDir.create(empty).root == empty  # ... and stays one once it holds files (it is marked as ours)
    assert sorted(os.listdir(empty)) == [".meshdream-run", "notes.txt"]


def test_stages_refuse_a_run_another_process_writes(holder, tiny_configs):
    from click.testing import CliRunner

    from meshdream.cli import cli

    run, proc = holder
    (run.root / "coarse").mkdir()
    for args in (["export", str(run.root)], ["generate", "a red cube", "--out", str(run.root)],
                 ["coarse", "a red cube", "--out", str(run.root), "--config", tiny_configs["coarse"]],
                 ["refine", str(run.root)]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and f"process {proc.pid} on host" in r.output and "coarse stage" in r.output, (args, r.output)


def test_every_file_a_stage_writes_is_named_by_run_py(coarse_run):
    """The stage loop, provenance and the stages take their paths from RunDir: a finished coarse RUN holds
    exactly the files RunDir names (plus previews)."""
    run = RunDir.existing(coarse_run)
    named = {run.checkpoint("coarse"), run.config_file("coarse"), run.record("coarse"), run.prompt_file, run.coarse_mesh,
             run.coarse_field}
    assert all(p.is_file() for p in named)
    written = {p for p in run.coarse.iterdir() if p.is_file()}
    assert written == named and (run.coarse / "previews").is_dir()
    assert run.export_file("glb") == run.export / "model.glb" and run.refined_material.parent == run.refine


def test_batch_and_run_folders_share_one_output_check(tmp_path):
    """`batch --out` and RUN folders are checked by run.make_output_folder: a file, a foreign folder, an unwritable path."""
    from meshdream.batching.runner import _check_out

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"mine")
    for check, kind in ((lambda p: _check_out(p, resume=False), "batch"), (RunDir.create, "RUN")):
        with pytest.raises(UserInputError, match="exists and is not a folder"):
            check(blocker)
        with pytest.raises(UserInputError, match=f"not a meshdream {kind}"):
            check(foreign)
        with pytest.raises(UserInputError, match="not writable"):
            check(blocker / "out")
    assert os.listdir(foreign) == ["cat.jpg"]
    _check_out(tmp_path / "new", resume=False)
    assert os.listdir(tmp_path / "new") == []  # no probe or marker left in a batch folder


@pytest.mark.parametrize("stage", ["coarse", "generate"])
def test_python_api_refused_for_bad_input_leaves_no_new_run(tmp_path, stage):
    """The Python API cleans up like the CLI: a RUN made by a call refused before any work is removed;
    a folder the user already had is kept."""
    import meshdream

    fn = getattr(meshdream, stage)
    key = "guidance.name" if stage == "coarse" else "coarse.guidance.name"
    bad = [f"{key}={tmp_path / 'no-such-model'}"]
    new = tmp_path / "new_run"
    with pytest.raises(UserInputError, match="no-such-model"):
        fn("a red cube", new, overrides=bad, progress=False)
    assert not new.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(UserInputError, match="no-such-model"):
        fn("a red cube", mine, overrides=bad, progress=False)
    assert mine.is_dir()
