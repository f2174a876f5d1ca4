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


# ------------------------------------------------------------------ damaged model files

SAFETENSORS = ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors"]


@st.composite
def damage(draw, size: int):
    """How a download or a disk can damage a file: cut short, bytes overwritten (mostly in the header, where the
    parser looks), junk in front, or the header's length field changed."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "prefix", "length"]))
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1)), b""
    if kind == "overwrite":
        at = draw(st.one_of(st.integers(0, min(size - 1, 400)), st.integers(0, size - 1)))
        return kind, at, draw(st.binary(min_size=1, max_size=16))
    if kind == "prefix":
        return kind, 0, draw(st.binary(min_size=1, max_size=16))
    return kind, 0, draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")


def _damaged(data: bytes, how) -> bytes:
    kind, at, blob = how
    if kind == "truncate":
        return data[:at]
    if kind in ("overwrite", "length"):
        return data[:at] + blob + data[at + len(blob):]
    return blob + data


@pytest.fixture(scope="module")
def model_copy(tiny_prior, tmp_path_factory):
    import shutil

    folder = tmp_path_factory.mktemp("fuzzed_model") / "model"
    shutil.copytree(tiny_prior, folder)
    return folder


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_safetensors_file_loads_or_is_a_usage_error_naming_it(data, model_copy):
    from meshdream.guidance import load_guidance

    name = data.draw(st.sampled_from(SAFETENSORS))
    path = model_copy / name
    original = path.read_bytes()
    path.write_bytes(_damaged(original, data.draw(damage(len(original)))))
    try:
        load_guidance(str(model_copy))  # weights changed past the header are just other weights
    except UserInputError as e:
        assert str(path) in str(e) or "cannot load guidance model" in str(e), str(e)
    finally:
        path.write_bytes(original)


# ------------------------------------------------------------------ where export writes

SEGMENTS = ["coarse", "refine", "export", "previews", "..", ".", "link", "new", "run"]
FILE_NAMES = ["mesh.ply", "mesh.obj", "mesh.mtl", "texture.png", "field.pt", "stage.json", ".meshdream-run", "x.glb", "x.gltf",
              "x.obj", "x.ply", "x.GLB", "x", "x.exe"]


@pytest.fixture(scope="module")
def export_run(finished_run, tmp_path_factory):
    import shutil

    run = tmp_path_factory.mktemp("fuzzed_outputs") / "run"
    shutil.copytree(finished_run, run)
    (run / "link").symlink_to(run / "refine")
    return run


def _stage_files(run):
    import hashlib

    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in run.rglob("*") if p.is_file() and p.relative_to(run).parts[0] in ("coarse", "refine", ".meshdream-run")}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(segments=st.lists(st.sampled_from(SEGMENTS), max_size=4), name=st.sampled_from(FILE_NAMES),
       fmt=st.sampled_from([None, "glb", "gltf", "obj", "ply"]))
def test_export_never_writes_into_a_stage_folder_and_the_extension_names_the_format(export_run, segments, name, fmt):
    from pathlib import Path

    before = _stage_files(export_run)
    output = Path(export_run, *segments, name)
    args = ["export", str(export_run), "--output", str(output)] + (["--format", fmt] if fmt else [])
    r = CliRunner().invoke(cli, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
    assert r.exit_code in (0, 2) and "Traceback" not in r.output, (args, r.output)
    assert _stage_files(export_run) == before, args  # nothing of a stage changed
    if r.exit_code == 0:
        real, root = Path(os.path.realpath(output)), Path(os.path.realpath(export_run))
        assert root not in real.parents or real.relative_to(root).parts[0] not in ("coarse", "refine"), args
        assert real.suffix[1:].lower() == (fmt or real.suffix[1:].lower()) and real.suffix[1:].lower() in ("glb", "gltf", "obj", "ply")
