"""Property-based fuzzing of the config loader and the CLI's argument handling: any input ends in a config or a
UserInputError (loader), and exit code 0, 1 or 2 with a message (CLI) — never an unhandled exception.

The CLI examples always end with a guidance model that cannot be found, so an invocation that passes every
check stops there (exit 2) instead of running an optimisation; everything before it — options, config files,
prompts, RUN folders, resume — is exercised for real."""
import os
import tempfile

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdream.cli import cli
from meshdream.config import load_config
from meshdream.errors import UserInputError
from meshdream.stages.coarse import CoarseConfig
from meshdream.stages.refine import RefineConfig

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["iters", "seed", "batch_size", "resolution", "lr", "texture_size", "checkpoint_every", "preview_every", "bound",
        "guidance", "name", "guidance_scale", "t_min", "t_max", "grad_clip", "nerf", "hash_grid", "levels", "extract",
        "threshold", "cameras", "fov_range", "background", "shading", "albedo", "occupancy", "max_faces", "unknown_key"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)
documents = st.one_of(st.dictionaries(st.one_of(st.sampled_from(KEYS), scalars), values, max_size=6), values)


def _load(cls, data: bytes):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.yaml")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return load_config(cls, path)
        except UserInputError as e:
            assert str(e)
            return None


@FAST
@given(doc=documents, cls=st.sampled_from([CoarseConfig, RefineConfig]))
def test_config_loader_gives_a_config_or_a_usage_error(doc, cls):
    cfg = _load(cls, yaml.safe_dump(doc, allow_unicode=True).encode())
    if cfg is not None:  # whatever was accepted obeys the limits
        assert cfg.iters >= 1 and cfg.checkpoint_every >= 1 and cfg.batch_size >= 1


@FAST
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_config_loader_survives_any_bytes(data):
    _load(CoarseConfig, data)


names = st.text(alphabet="abcxyz_-.", min_size=0, max_size=6)
ints = st.one_of(st.integers(min_value=-5, max_value=20000), st.integers(min_value=-(2**70), max_value=2**70)).map(str)
junk = st.one_of(names, ints, st.sampled_from(["nan", "inf", "1e400", "", " ", "a=b", "--resume", "🧊", "立方体"]))
configs = st.sampled_from(["config.yaml", "config.yaml", "missing.yaml", ".", "run"])
OPTIONS = {
    "--iters": ints, "--seed": ints, "--device": st.sampled_from(["cpu", "cuda", "tpu"]), "--negative-prompt": junk,
    "--config": configs, "--coarse-config": configs, "--refine-config": configs, "--texture-size": ints, "--faces": ints,
    "--format": st.sampled_from(["glb", "gltf", "obj", "ply", "exe"]), "--output": st.sampled_from(["out.glb", "run", "x/y.obj", ""]),
    "--coarse-iters": ints, "--refine-iters": ints,
}
COMMANDS = {
    "coarse": ["--iters", "--seed", "--device", "--negative-prompt", "--config"],
    "refine": ["--iters", "--seed", "--device", "--texture-size", "--config"],
    "export": ["--format", "--faces", "--texture-size", "--output"],
    "generate": ["--coarse-iters", "--refine-iters", "--seed", "--device", "--format", "--coarse-config", "--refine-config",
                 "--negative-prompt"],
}
prompts = st.one_of(st.sampled_from(["a red cube", "", "  ", "🧊 立方体", "-x", "a blue sphere " * 8]), st.text(max_size=12))
# what the RUN folder holds: nothing, an empty folder, a file, or stage files with fuzzed contents
RUN_STATES = ["absent", "empty", "file", "coarse", "coarse+refine"]


@st.composite
def invocations(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    args = [command]
    if command in ("coarse", "generate"):
        args += [draw(prompts), "--out", "run"]
    else:
        args.append("run")
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            args.append(draw(st.sampled_from(["--resume", "--quiet", "--bogus"])))
        elif choice == 1:
            args += [draw(st.sampled_from(sorted(OPTIONS))), draw(junk)]  # maybe not this command's option
        else:
            option = draw(st.sampled_from(COMMANDS[command]))
            args += [option, draw(OPTIONS[option])]
    return args, draw(documents), draw(st.sampled_from(RUN_STATES)), draw(st.binary(max_size=64))


def _prepare(state: str, doc, blob: bytes) -> None:
    """config.yaml holds the fuzzed document; RUN ('run') is in ``state`` with fuzzed file contents."""
    text = yaml.safe_dump(doc, allow_unicode=True)
    with open("config.yaml", "w") as f:
        f.write(text)
    if state == "file":
        open("run", "wb").write(blob)
    elif state != "absent":
        os.makedirs("run")
    if state.startswith("coarse"):
        os.makedirs("run/coarse")
        for name in ("prompt.yaml", "config.yaml"):
            with open(f"run/coarse/{name}", "w") as f:
                f.write(text)
        for name in ("mesh.ply", "field.pt", "checkpoint.pt"):
            open(f"run/coarse/{name}", "wb").write(blob)
    if state == "coarse+refine":
        os.makedirs("run/refine")
        for name in ("mesh.obj", "texture.png", "checkpoint.pt"):
            open(f"run/refine/{name}", "wb").write(blob)
        with open("run/refine/config.yaml", "w") as f:
            f.write(text)


@FAST
@given(case=invocations())
def test_cli_exits_0_1_or_2_with_a_message_never_a_traceback(case):
    args, doc, state, blob = case
    with tempfile.TemporaryDirectory() as d:
        cwd = os.getcwd()
        os.chdir(d)
        try:
            _prepare(state, doc, blob)
            if args[0] != "export":
                args = args + ["--guidance", os.path.join(d, "no-such-model")]
            r = CliRunner().invoke(cli, args)
        finally:
            os.chdir(cwd)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, state, repr(r.exception))
    assert r.exit_code in (0, 1, 2), (args, r.exit_code, r.output)
    assert "Traceback" not in r.output
    if r.exit_code:
        assert r.output.strip(), args
