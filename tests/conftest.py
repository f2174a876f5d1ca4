"""Shared test set-up: offline, deterministic, small."""
import os

# The hub is unreachable here; tests load only models they build and save themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402



def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` (nvdiffrast, fp16 guidance) skip where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run scripts/gpu_check.sh on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory):
    """A random pixel-space prior folder (16 px), loaded like any user-supplied model folder."""
    from tiny_models import save_tiny_pixel_prior

    return save_tiny_pixel_prior(str(tmp_path_factory.mktemp("tiny_prior")))


TINY_COARSE = {
    "iters": 6, "resolution": 16, "num_samples": 16, "checkpoint_every": 2, "preview_every": 0, "preview_views": 2,
    "preview_resolution": 16, "occupancy": {"resolution": 8, "update_every": 2},
    "nerf": {"hash_grid": {"levels": 4, "log2_table_size": 12, "base_resolution": 4, "max_resolution": 32}, "hidden": 16},
    "extract": {"resolution": 32, "coarse_resolution": 16, "target_faces": 500},
}
TINY_REFINE = {"iters": 4, "resolution": 16, "supersample": 1, "texture_size": 32, "checkpoint_every": 2, "preview_every": 0,
               "preview_views": 2, "preview_resolution": 16, "batch_size": 1, "max_faces": 400}


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory, tiny_prior):
    """YAML configs for a few-second coarse and refine run on the tiny prior."""
    folder = tmp_path_factory.mktemp("configs")
    paths = {}
    for name, cfg in (("coarse", TINY_COARSE), ("refine", TINY_REFINE)):
        data = dict(cfg, guidance={"name": tiny_prior})
        paths[name] = str(folder / f"{name}.yaml")
        with open(paths[name], "w") as f:
            yaml.safe_dump(data, f)
    return paths


@pytest.fixture(scope="session")
def coarse_run(tmp_path_factory, tiny_configs):
    """A finished tiny coarse RUN (shared, read-only for tests)."""
    from meshdream.stages.coarse import coarse

    out = tmp_path_factory.mktemp("coarse_run") / "run"
    coarse("a red cube", out, config=tiny_configs["coarse"], progress=False)
    return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, coarse_run, tiny_configs):
    """A tiny RUN with coarse, refine and export done (shared, read-only for tests: copy it to change it)."""
    import shutil

    from click.testing import CliRunner

    from meshdream.cli import cli

    run = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(coarse_run, run)
    r = CliRunner().invoke(cli, ["refine", str(run), "--config", tiny_configs["refine"], "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["export", str(run)])
    assert r.exit_code == 0, r.output
    return run
