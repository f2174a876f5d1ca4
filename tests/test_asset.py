import json
import struct

import numpy as np
import trimesh
import yaml
from click.testing import CliRunner
from test_export import gltf_validator, textured_run  # noqa: F401  (fixture)

from meshdream import __version__
from meshdream.asset.formats import FORMATS, WRITERS, asset_files, write_asset
from meshdream.asset.loading import load_asset
from meshdream.asset.model import Asset
from meshdream.mesh.geometry import smooth_normals
from meshdream.cli import cli
from meshdream.stages.export import export
from meshdream.engine.run import RunDir


def _glb_json(data: bytes) -> dict:
    n = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20:20 + n])


def _with_prompt(run):
    (run / "coarse" / "prompt.yaml").write_text(yaml.safe_dump({"prompt": "a red cube", "negative_prompt": "", "seed": 3}))
    (run / "coarse" / "config.yaml").write_text(yaml.safe_dump({"iters": 12, "guidance": {"name": "embedded"}}))
    return run


def test_cli_format_choices_come_from_the_writer_table():
    assert FORMATS == tuple(WRITERS) and set(FORMATS) == {"glb", "gltf", "obj", "ply", "stl", "3mf"}
    r = CliRunner().invoke(cli, ["export", "--help"])
    for fmt in WRITERS:
        assert fmt in r.output


def test_writers_return_file_contents_and_touch_no_disk(tmp_path):
    run = textured_run(tmp_path)
    asset = load_asset(RunDir(run))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for fmt in FORMATS:
        files = asset_files(asset, fmt, "thing")
        assert next(iter(files)) == f"thing.{fmt}" and all(isinstance(b, bytes) and b for b in files.values())
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert set(asset_files(asset, "obj", "thing")) == {"thing.obj", "thing.mtl", "thing.png"}


def test_glb_is_named_says_who_made_it_and_validates_clean(tmp_path, gltf_validator):  # noqa: F811
    run = _with_prompt(textured_run(tmp_path))
    for fmt in ("glb", "gltf"):
        path = export(run, format=fmt)
        report = gltf_validator(path)
        assert (report["numErrors"], report["numWarnings"], report["numInfos"], report["numHints"]) == (0, 0, 0, 0), report["messages"]
        tree = _glb_json(path.read_bytes()) if fmt == "glb" else json.loads(path.read_text())
        assert tree["asset"]["generator"] == f"meshdream {__version__}"
        extras = tree["asset"]["extras"]
        assert extras["prompt"] == "a red cube" and extras["seed"] == 3 and extras["settings"]["coarse"]["iters"] == 12
        assert tree["nodes"][0]["name"] == "meshdream" and tree["meshes"][0]["name"] == "meshdream"
        assert tree["materials"][0]["name"] == "meshdream_material"
        used = {a["bufferView"] for a in tree["accessors"]}
        assert all("target" in tree["bufferViews"][i] for i in used)


def test_obj_has_smooth_normals_across_uv_seams(tmp_path):
    run = textured_run(tmp_path)
    obj = export(run, format="obj")
    text = obj.read_text()
    vn = [list(map(float, line.split()[1:])) for line in text.splitlines() if line.startswith("vn ")]
    v = [list(map(float, line.split()[1:4])) for line in text.splitlines() if line.startswith("v ")]
    assert len(vn) == len(v) and any(line.startswith("f ") and line.count("/") == 6 for line in text.splitlines())
    v, vn = np.array(v), np.array(vn)
    # on a sphere the smooth normal is the radial direction, also at vertices split along UV seams
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert (np.sum(radial * vn, axis=1) > 0.98).all()
    assert "usemtl meshdream_material" in text and "map_Kd model.png" in (obj.parent / "model.mtl").read_text()


def test_smooth_normals_weld_split_vertices():
    box = trimesh.creation.icosphere(subdivisions=2)
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    split_v = v[f.reshape(-1)]  # every face its own vertices: a mesh made only of seams
    split_f = np.arange(len(split_v)).reshape(-1, 3)
    n = smooth_normals(split_v, split_f)
    assert np.allclose(n, smooth_normals(v, f)[f.reshape(-1)], atol=1e-5)


def test_write_asset_honours_the_given_file_name(tmp_path):
    asset = Asset(np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]), colours=np.full((3, 3), 200, np.uint8))
    path = write_asset(asset, tmp_path / "x.bin", "ply")
    assert path.is_file() and len(trimesh.load(path, file_type="ply").faces) == 1
