"""A RUN folder is data from elsewhere (zips, bug reports): nothing in it may run code. Every file a finished RUN
holds is replaced, one at a time, by a malicious pickle (with our checkpoint header and a valid checksum, and
without), then refine, export and every --resume are run on it: each ends in a clean exit code and the payload
never runs."""
import os
import shutil

import pytest
from click.testing import CliRunner

from meshdream.cli import cli
from test_checkpoint import malicious_checkpoint


def commands(run, configs):
    return {
        "refine": ["refine", str(run), "--config", configs["refine"], "--iters", "1", "--quiet"],
        "export": ["export", str(run), "--output", str(run.parent / "out.glb")],
        "coarse --resume": ["coarse", "a red cube", "--out", str(run), "--resume", "--quiet"],
        "refine --resume": ["refine", str(run), "--resume", "--quiet"],
        # no MP4: it is drawn from the same asset files as the GIF, which generate still writes
        "generate --resume": ["generate", "a red cube", "--out", str(run), "--resume", "--quiet", "--no-video"],
    }


def files_of(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


# the files meshdream reads; every other file (previews, exports, the GIF) is replaced all at once below
READ = ["coarse/checkpoint.pt", "coarse/field.pt", "coarse/config.yaml", "coarse/prompt.yaml", "coarse/mesh.ply",
        "coarse/stage.json", "refine/checkpoint.pt", "refine/config.yaml", "refine/mesh.obj", "refine/mesh.mtl",
        "refine/texture.png", "refine/stage.json", ".meshdream-run"]


def _attack(tmp_path, finished_run, tiny_configs, victims, header):
    """Each command on its own copy of the RUN with ``victims`` replaced; returns {command: exit code}."""
    marker = tmp_path / "payload-ran"
    outcomes = {}
    for i, label in enumerate(commands(finished_run, tiny_configs)):
        run = tmp_path / str(i) / "run"
        shutil.copytree(finished_run, run)
        for name in victims:
            malicious_checkpoint(run / name, marker, header)
        r = CliRunner().invoke(cli, commands(run, tiny_configs)[label])
        assert r.exception is None or isinstance(r.exception, SystemExit), (victims, label, repr(r.exception))
        assert r.exit_code in (0, 1, 2) and "Traceback" not in r.output, (victims, label, r.output)
        assert not marker.exists(), (victims, label)
        outcomes[label] = r.exit_code
        shutil.rmtree(run.parent)
    return outcomes


def test_no_file_of_a_run_can_run_code(tmp_path, finished_run, tiny_configs):
    """Checkpoints get both kinds of pickle; every other file (read by YAML, JSON, mesh and image parsers, which
    see bytes either way) gets one, alternating, to keep the test short."""
    every = files_of(finished_run)
    assert set(READ) <= set(every), sorted(set(READ) - set(every))
    for i, name in enumerate(READ):
        for header in ([True, False] if name.endswith(".pt") else [i % 2 == 0]):
            outcomes = _attack(tmp_path / f"{i}-{header}", finished_run, tiny_configs, [name], header)
            if name.endswith(".pt"):  # a checkpoint is read by some command, which refuses it
                assert 1 in outcomes.values(), (name, header, outcomes)
    for header in (True, False):
        _attack(tmp_path / f"rest-{header}", finished_run, tiny_configs, [n for n in every if n not in READ], header)
