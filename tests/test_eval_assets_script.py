"""scripts/eval_assets.py end to end on a RUN folder whose GLB is a known primitive (no generate), and its usage errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "eval_assets.py"


def run_script(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def small_heldout(tmp_path_factory):
    """Tiny held-out sets rendered by the prior's own renderer (the real ones are 3000 images each)."""
    from meshdream.prior.primitives import render_dataset

    data = tmp_path_factory.mktemp("data") / "prior"
    data.mkdir()
    for name, n, seed in (("heldout_a", 160, 2), ("heldout_b", 60, 3)):
        images, captions, shapes, colours = render_dataset(n, seed=seed, resolution=32)
        np.savez(data / f"{name}.npz", images=images, captions=np.array(captions), shapes=np.array(shapes), colours=np.array(colours))
    return data


def make_run(root: Path, prompt: str, shape: str, colour) -> Path:
    """A RUN folder as generate leaves it, holding the reference primitive with a flat texture."""
    import yaml

    from meshdream.asset.metrics import primitive_mesh, rotation_matrix
    from meshdream.stages.export import Asset, write_asset
    from meshdream.mesh.uv import unwrap

    v, f = primitive_mesh(shape, 40)
    v = (0.9 * v @ rotation_matrix([0, 1, 0], 0.5).T).astype(np.float32)
    uv = unwrap(v, f, resolution=64)
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:] = colour
    (root / "coarse").mkdir(parents=True)
    (root / "coarse" / "prompt.yaml").write_text(yaml.safe_dump({"prompt": prompt, "negative_prompt": "", "seed": 0}))
    (root / "export").mkdir()
    write_asset(Asset(v[uv.vmapping], uv.faces, uvs=uv.uvs, texture=texture), root / "export" / "model.glb", "glb")
    return root


def test_judges_existing_runs_and_writes_the_report(tmp_path, small_heldout):
    cube = make_run(tmp_path / "cube", "a red cube", "cube", (217, 26, 26))
    torus = make_run(tmp_path / "torus", "a blue torus", "torus", (31, 64, 230))
    out = tmp_path / "out"
    r = run_script("--runs", cube, torus, "--out", out, "--data", small_heldout, "--views", 4, "--extract-resolution", 40, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "eval_assets.json").read_text())
    rows = {row["prompt"]: row for row in report["rows"]}
    assert rows["a red cube"]["topology_ok"] and rows["a red cube"]["topology"]["genus"] == 0
    assert rows["a blue torus"]["topology_ok"] and rows["a blue torus"]["topology"]["genus"] == 1
    for row in rows.values():
        assert row["fit"]["chamfer_pct"] < 1.0  # the primitive itself, meshed a little coarser than the floor
        assert row["shape_pred"] in ("sphere", "cube", "cylinder", "cone", "torus")
        assert "generate" not in row  # judged, not regenerated
    assert set(report["floor"]) == {"cube", "torus"}
    table = (out / "eval_assets.md").read_text()
    assert "| a red cube | 0 | 1 | 0 | 0 | yes |" in table
    assert "one component, watertight, expected genus | 2/2" in table
    assert "## Summary against the quality targets" in table  # keyed by version and date, nothing else
    from meshdream import __version__

    assert f"meshdream {__version__}, " in table.splitlines()[2]
    from PIL import Image

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[1] == 2 * 128
    assert (small_heldout.parent / "eval_assets" / "classifier.pt").is_file()  # cached for the next run


def test_usage_errors_name_the_bad_value(tmp_path):
    r = run_script("--prompts", tmp_path / "missing.txt", cwd=tmp_path)
    assert r.returncode == 2 and "missing.txt" in r.stderr and "Traceback" not in r.stderr
    r = run_script("--runs", tmp_path / "nope", cwd=tmp_path)
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_script("--runs", tmp_path / "empty", cwd=tmp_path)
    assert r.returncode == 2 and "cannot read its prompt" in r.stderr and "Traceback" not in r.stderr
    r = run_script("--views", 0, cwd=tmp_path)
    assert r.returncode == 2 and "--views 0" in r.stderr
