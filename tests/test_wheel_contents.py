"""The wheel's file list, from setuptools' own machinery without building anything (no C++ compile).

`pip wheel` runs bdist_wheel, whose build_py copies exactly ``build_py.get_outputs()`` (modules and package data)
and whose dist-info takes ``metadata.license_files``; this reads both from setup.py as pip would. The real wheel
(scripts/check_wheel.sh) holds these files plus the compiled extension and the metadata.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folders whose every file the wheel must hold: the README uses them after `pip install meshdream-*.whl`
DATA_FOLDERS = ("meshdream/guidance/embedded_prior", "meshdream/gallery_assets", "meshdream/presets")
LICENCES = ("LICENSE", "NOTICE", "meshdream/guidance/embedded_prior/LICENSE", "meshdream/gallery_assets/LICENSE-model-viewer.txt",
            "meshdream/gallery_assets/LICENSE-three.txt", "meshdream/gallery_assets/LICENSE-lit.txt",
            "meshdream/gallery_assets/LICENSE-gainmap-js.txt")


def setup_distribution(script_args: list[str]):
    """setup.py's Distribution as `setup()` would make it, with no command run: setup.py is executed with
    setuptools.setup capturing its arguments (nothing is built or written)."""
    import runpy

    import setuptools
    import setuptools.dist

    captured: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # setup.py finds packages and C++ sources relative to the working folder
        mp.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
        dist = setuptools.dist.Distribution(dict(captured, script_name="setup.py", script_args=script_args))
        dist.parse_config_files()
        dist.parse_command_line()
        return dist


@pytest.fixture(scope="module")
def distribution(tmp_path_factory):
    build_lib = tmp_path_factory.mktemp("build_lib")
    dist = setup_distribution(["build_py", "--build-lib", str(build_lib)])
    build_py = dist.get_command_obj("build_py")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        build_py.ensure_finalized()
        outputs = build_py.get_outputs(include_bytecode=False)
    wheel_files = {os.path.relpath(p, build_lib).replace(os.sep, "/") for p in outputs}
    return dist, wheel_files


def _source_files(folder: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_wheel_holds_the_prior_presets_gallery_and_licences(distribution):
    _, wheel_files = distribution
    for folder in DATA_FOLDERS:
        expected = _source_files(folder)
        assert expected, f"{folder} is empty in the source tree"
        missing = sorted(expected - wheel_files)
        assert not missing, f"not in the wheel (setup.py package_data): {missing}"
    for name in ("meshdream/presets/sd.yaml", "meshdream/presets/if.yaml", "meshdream/guidance/embedded_prior/LICENSE",
                 "meshdream/guidance/embedded_prior/unet/diffusion_pytorch_model.safetensors",
                 "meshdream/guidance/embedded_prior/text_encoder/model.safetensors",
                 "meshdream/gallery_assets/model-viewer-umd.min.js", "meshdream/cli.py", "meshdream/stages/generate.py"):
        assert name in wheel_files, name
    assert not any(f.startswith(("tests/", "scripts/", "configs/")) for f in wheel_files)


def test_licence_files_and_metadata(distribution):
    dist, _ = distribution
    licence_files = set(dist.metadata.license_files or ())
    assert licence_files >= set(LICENCES), sorted(set(LICENCES) - licence_files)
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n") and "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert "Apache License, Version 2.0" in (ROOT / "meshdream/guidance/embedded_prior/LICENSE").read_text()
    meta = dist.metadata
    assert meta.license_expression == "Apache-2.0" and meta.author == "meshdream developers"
    assert meta.long_description_content_type == "text/markdown" and meta.long_description.startswith("# meshdream")
    assert dist.python_requires == ">=3.10" and meta.keywords and meta.classifiers and meta.description
    assert not meta.url  # meshdream has no public URL yet: none is made up
