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


# ------------------------------------------------------------------ valid checkpoints with the wrong contents

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CHECKPOINT_KEYS = ["stage", "step", "done", "config", "rng", "field", "state", "bound", "mesh", "offsets", "texture_logits",
                   "optimizer", "upstream", "negative_prompt", "prompt", "seed", "occupancy", "background", "iters", "kind"]


@st.composite
def _tensors(draw):
    import torch

    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    dtype = draw(st.sampled_from([torch.float32, torch.int64, torch.bool]))
    return torch.zeros(shape, dtype=dtype) + draw(st.sampled_from([0, 1, -1]))


_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=6),
                    _tensors())
_values = st.recursive(_leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.sampled_from(CHECKPOINT_KEYS), inner, max_size=4)),
                       max_leaves=8)


def _paths(d, prefix=()):
    """Every key path of a nested dict."""
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


@st.composite
def _mutated(draw, original):
    """A real checkpoint with a few entries deleted, replaced by fuzzed values, or added under known names."""
    import copy

    state = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = sorted(_paths(state), key=repr)
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "add" or not paths:
            state[draw(st.sampled_from(CHECKPOINT_KEYS))] = draw(_values)
            continue
        *parents, leaf = draw(st.sampled_from(paths))
        node = state
        for p in parents:
            node = node[p]
        if action == "delete":
            del node[leaf]
        else:
            node[leaf] = draw(_values)
    return state


# the file, and the command that reads it
TARGETS = {"coarse/field.pt": ["refine", "{run}", "--config", "{refine}", "--quiet"],
           "coarse/checkpoint.pt": ["coarse", "a red cube", "--out", "{run}", "--resume", "--quiet"],
           "refine/checkpoint.pt": ["refine", "{run}", "--resume", "--quiet"]}


@pytest.fixture(scope="module")
def originals(finished_run):
    from meshdream.engine.checkpoint import load_checkpoint

    return {name: load_checkpoint(finished_run / name) for name in TARGETS}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoints_with_wrong_keys_are_refused_cleanly(data, tmp_path, finished_run, originals, tiny_configs):
    """Checksummed checkpoints (so they pass the damage check) holding the wrong entries, in a RUN without records (so
    nothing vouches for them): the command that reads each ends in exit 0, 1 or 2 and a message, never a traceback."""
    from meshdream.engine.checkpoint import save_checkpoint

    name = data.draw(st.sampled_from(sorted(TARGETS)))
    state = data.draw(_mutated(originals[name]))
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    shutil.copytree(finished_run, run)
    for p in run.glob("*/stage.json"):
        p.unlink()
    save_checkpoint(run / name, state)
    args = [a.format(run=run, refine=tiny_configs["refine"]) for a in TARGETS[name]]
    r = CliRunner().invoke(cli, args)
    shutil.rmtree(run)
    assert r.exception is None or isinstance(r.exception, SystemExit), (name, args, repr(r.exception))
    assert r.exit_code in (0, 1, 2) and "Traceback" not in r.output, (name, r.output)
    if r.exit_code:
        assert r.output.strip()


@pytest.mark.parametrize("entry, value", [("negative_prompt", ["a list"]), ("prompt", 3), ("done", "yes")])
def test_a_resumed_checkpoint_with_plain_entries_of_the_wrong_type_is_refused(tmp_path, finished_run, originals, entry, value):
    """Entries that a resumed stage reads as text or a flag are checked when the checkpoint is loaded."""
    from meshdream.engine.checkpoint import save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = dict(originals["coarse/checkpoint.pt"], **{entry: value})
    save_checkpoint(run / "coarse/checkpoint.pt", state)
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(run), "--resume", "--quiet"])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, repr(r.exception)
    assert f"wrong: {entry}" in r.output and "without --resume" in r.output, r.output
