"""Guidance folders that are broken or ask for more trust than a model folder deserves: each is a clear usage error,
and no code from the folder ever runs."""
import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from meshdream.cli import cli
from meshdream.errors import UserInputError
from meshdream.guidance import GuidanceConfig, load_guidance
from tiny_models import save_tiny_pixel_prior


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_tiny_pixel_prior(str(tmp_path_factory.mktemp("good") / "prior"))


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(fn(data)))


def _remote_code(folder, marker):
    tok = folder / "tokenizer"
    _edit_json(tok / "tokenizer_config.json", lambda d: dict(d, auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]}))
    (tok / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                 "from transformers import PreTrainedTokenizerFast\nclass EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")


def _bin_text_encoder(folder, marker):
    from safetensors.torch import load_file

    te = folder / "text_encoder"
    state = load_file(te / "model.safetensors")
    (te / "model.safetensors").unlink()
    torch.save(state, te / "pytorch_model.bin")


BREAKAGES = {
    "malformed model_index.json": (lambda f, m: (f / "model_index.json").write_text("{not json"), "cannot be read as JSON"),
    "list model_index.json": (lambda f, m: (f / "model_index.json").write_text("[1, 2]"), "must hold a JSON object"),
    "unknown pipeline": (lambda f, m: (f / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}'),
                         "neither a Stable Diffusion"),
    "unknown text encoder architecture": (lambda f, m: _edit_json(f / "text_encoder" / "config.json",
                                                                  lambda d: dict(d, architectures=["pipeline"])),
                                          "architecture 'pipeline' is not supported"),
    "remote code": (_remote_code, "never runs code from model folders"),
    "pickled .bin text encoder": (_bin_text_encoder, "holds its weights only as pickled files"),
    "zero timesteps": (lambda f, m: _edit_json(f / "scheduler" / "scheduler_config.json", lambda d: dict(d, num_train_timesteps=0)),
                       "num_train_timesteps"),
    "zero sample_size": (lambda f, m: _edit_json(f / "unet" / "config.json", lambda d: dict(d, sample_size=0)), "sample_size"),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_broken_or_untrusted_guidance_folder_is_a_usage_error(tmp_path, good, name):
    folder = tmp_path / "model"
    shutil.copytree(good, folder)
    marker = tmp_path / "code-ran"
    breaks, message = BREAKAGES[name]
    breaks(folder, marker)
    with pytest.raises(UserInputError, match=message):
        load_guidance(GuidanceConfig(name=str(folder)))
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(tmp_path / "run"), "--guidance", str(folder), "--quiet"])
    assert r.exit_code == 2 and message.split("'")[0] in r.output and "Traceback" not in r.output, r.output
    assert not marker.exists()


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "short":
        path.write_bytes(data[:5])
    elif how == "header":
        path.write_bytes(data[:8] + b"{not json" + data[17:])
    else:
        path.write_bytes(b"\x00garbage\xff" * 3)


DAMAGED = [("text_encoder/model.safetensors", "truncated"), ("text_encoder/model.safetensors", "short"),
           ("text_encoder/model.safetensors", "header"), ("unet/diffusion_pytorch_model.safetensors", "truncated"),
           ("unet/diffusion_pytorch_model.safetensors", "header"), ("tokenizer/tokenizer.json", "junk"),
           ("tokenizer/tokenizer_config.json", "junk"), ("text_encoder/config.json", "junk"), ("unet/config.json", "truncated"),
           ("scheduler/scheduler_config.json", "junk"), ("meshdream_prior.json", "junk")]


@pytest.mark.parametrize("name, how", DAMAGED)
def test_a_damaged_model_file_is_a_usage_error_naming_it_and_leaves_no_run(tmp_path, tiny_prior, tiny_configs, name, how):
    import shutil

    from click.testing import CliRunner

    from meshdream.cli import cli

    model = tmp_path / "model"
    shutil.copytree(tiny_prior, model)
    _damage(model / name, how)
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["coarse", "a red cube", "--out", str(out), "--config", tiny_configs["coarse"],
                                 "--guidance", str(model), "--quiet"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2 and str(model / name) in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()


def test_a_damaged_model_leaves_a_finished_run_as_it_was(tmp_path, tiny_prior, tiny_configs, finished_run):
    import hashlib
    import shutil

    from click.testing import CliRunner

    from meshdream.cli import cli

    model = tmp_path / "model"
    shutil.copytree(tiny_prior, model)
    _damage(model / "text_encoder" / "model.safetensors", "truncated")
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "refine")
    before = {p: hashlib.sha256(p.read_bytes()).digest() for p in run.rglob("*") if p.is_file()}
    for args in (["coarse", "a red cube", "--out", str(run), "--config", tiny_configs["coarse"]],
                 ["refine", str(run), "--config", tiny_configs["refine"]]):
        r = CliRunner().invoke(cli, args + ["--guidance", str(model), "--quiet"])
        assert r.exit_code == 2 and "model.safetensors" in r.output, r.output
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in run.rglob("*") if p.is_file()} == before
    assert not (run / "refine").exists()
