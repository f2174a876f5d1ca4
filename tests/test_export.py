import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from PIL import Image

from meshdream.cli import cli
from meshdream.errors import UserInputError
from meshdream.stages.export import export

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def gltf_validator():
    """The Khronos glTF Validator (npm `gltf-validator`), installed on first use into a cache folder.
    A missing node/npm or a failed install FAILS the tests: CI must not skip validation silently."""
    prefix = Path(os.environ.get("MESHDREAM_CACHE", Path.home() / ".cache" / "meshdream")) / "gltf-validator"
    if not (prefix / "node_modules" / "gltf-validator").is_dir():
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.fail("node and npm are needed to run the Khronos glTF Validator (apt-get install nodejs npm)")
        prefix.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(prefix), "gltf-validator"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.fail(f"npm install gltf-validator failed: {r.stderr[-2000:]}")

    def validate(path) -> dict:
        r = subprocess.run(["node", str(HERE / "gltf_validate.js"), str(prefix), str(path)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    return validate


def textured_run(tmp_path) -> Path:
    """A RUN with a refined textured mesh (a box with a two-colour texture), in the documented layout."""
    run = tmp_path / "run"
    (run / "refine").mkdir(parents=True)
    (run / "coarse").mkdir()
    box = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    from meshdream.stages.refine import save_textured_obj
    from meshdream.mesh.uv import unwrap

    uv = unwrap(np.asarray(box.vertices, np.float32), np.asarray(box.faces), resolution=64)
    tex = np.zeros((64, 64, 3), np.float32)
    tex[:32, :, 0] = 1.0  # texel rows with v < 0.5 red
    tex[32:, :, 2] = 1.0  # v > 0.5 blue
    save_textured_obj(run / "refine" / "mesh.obj", np.asarray(box.vertices, np.float32)[uv.vmapping], uv.faces, uv.uvs, tex)
    colours = np.tile([[200, 30, 30, 255]], (len(box.vertices), 1)).astype(np.uint8)
    (run / "coarse" / "mesh.ply").write_bytes(trimesh.Trimesh(box.vertices, box.faces, vertex_colors=colours).export(file_type="ply"))
    return run


def test_glb_is_valid_and_round_trips(tmp_path, gltf_validator):
    run = textured_run(tmp_path)
    src = trimesh.load(run / "refine" / "mesh.obj", process=False, force="mesh")
    path = export(run, format="glb")
    assert path == run / "export" / "model.glb"
    report = gltf_validator(path)
    assert report["numErrors"] == 0, report["messages"]
    assert report["numWarnings"] == 0, report["messages"]
    back = trimesh.load(path, process=False, force="mesh")
    assert back.vertices.shape == src.vertices.shape and back.faces.shape == src.faces.shape
    mat = back.visual.material
    assert mat.baseColorTexture.size == (64, 64) and mat.metallicFactor == 0
    doc, buffer = _glb_chunks(path)  # the raw document: unit normals pointing out of the sphere, uvs in [0, 1], a PNG
    primitive = doc["meshes"][0]["primitives"][0]
    position = _accessor(doc, buffer, primitive["attributes"]["POSITION"])
    normal = _accessor(doc, buffer, primitive["attributes"]["NORMAL"])
    uv = _accessor(doc, buffer, primitive["attributes"]["TEXCOORD_0"])
    assert normal.shape == position.shape == (len(back.vertices), 3) and uv.shape == (len(back.vertices), 2)
    assert np.allclose(np.linalg.norm(normal, axis=1), 1, atol=1e-3)
    outward = (normal * position).sum(1) / np.linalg.norm(position, axis=1)
    assert outward.min() > 0.9  # the icosphere's normals are its radial directions
    assert uv.min() >= 0 and uv.max() <= 1 and doc["images"][0]["mimeType"] == "image/png"


def _glb_chunks(path):
    """(JSON document, binary buffer) of a GLB file, read by its published layout (12-byte header, chunks)."""
    import json
    import struct

    raw = open(path, "rb").read()
    magic, version, length = struct.unpack_from("<4sII", raw, 0)
    assert magic == b"glTF" and version == 2 and length == len(raw)
    n, kind = struct.unpack_from("<I4s", raw, 12)
    assert kind == b"JSON"
    doc = json.loads(raw[20:20 + n])
    m, kind = struct.unpack_from("<I4s", raw, 20 + n)
    assert kind == b"BIN\x00"
    return doc, raw[28 + n:28 + n + m]


def _accessor(doc, buffer, index):
    """An accessor's float elements [count, components] (tightly packed, as our writer stores them)."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    assert acc["componentType"] == 5126  # FLOAT
    width = {"VEC2": 2, "VEC3": 3}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(buffer, np.float32, acc["count"] * width, start).reshape(-1, width)


def test_glb_texture_orientation_survives(tmp_path):
    run = textured_run(tmp_path)
    back = trimesh.load(export(run, format="glb"), process=False, force="mesh")
    colours = back.visual.to_color().vertex_colors[:, :3].astype(float)
    uv = back.visual.uv
    low, high = uv[:, 1] < 0.4, uv[:, 1] > 0.6
    assert colours[low, 0].mean() > 200 and colours[high, 2].mean() > 200  # v < 0.5 red, v > 0.5 blue


def test_gltf_decimated_and_resized_is_valid(tmp_path, gltf_validator):
    run = textured_run(tmp_path)
    path = export(run, format="gltf", faces=300, texture_size=32, output=tmp_path / "out" / "small.gltf")
    report = gltf_validator(path)
    assert report["numErrors"] == 0, report["messages"]
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.faces) <= 300 and back.visual.material.baseColorTexture.size == (32, 32)


def test_obj_and_ply(tmp_path):
    run = textured_run(tmp_path)
    obj = export(run, format="obj")
    assert (obj.parent / "model.mtl").is_file() and (obj.parent / "model.png").is_file()
    assert "model.png" in (obj.parent / "model.mtl").read_text()
    m = trimesh.load(obj, process=False, force="mesh")
    assert m.visual.uv is not None and len(m.faces) > 0
    ply = export(run, format="ply")
    p = trimesh.load(ply, process=False)
    c = np.asarray(p.visual.vertex_colors)[:, :3]
    assert len(c) == len(p.vertices) and (c[:, 0] > 200).any() and (c[:, 2] > 200).any()


def test_coarse_only_run_exports_vertex_colours(tmp_path, gltf_validator):
    run = textured_run(tmp_path)
    shutil.rmtree(run / "refine")
    with pytest.warns(UserWarning, match="no refine result"):
        path = export(run, format="glb")
    report = gltf_validator(path)
    assert report["numErrors"] == 0, report["messages"]
    with open(path, "rb") as f:
        assert b'"COLOR_0"' in f.read()


def test_errors(tmp_path):
    with pytest.raises(UserInputError, match="neither a refined nor a coarse mesh"):
        (tmp_path / "empty").mkdir()
        export(tmp_path / "empty")
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "empty"), "--format", "fbx"])
    assert r.exit_code == 2 and "'fbx' is not one of" in r.output
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output
    run = textured_run(tmp_path)
    r = CliRunner().invoke(cli, ["export", str(run), "--output", str(run)])
    assert r.exit_code == 2 and "is a directory" in r.output
    with pytest.raises(UserInputError, match="is a folder"):
        export(run, output=run)


def test_decimated_glb_with_a_normal_map_validates_clean(tmp_path, gltf_validator):
    run = textured_run(tmp_path)
    path = export(run, format="glb", faces=120, normal_map=True)
    report = gltf_validator(path)
    assert (report["numErrors"], report["numWarnings"], report["numInfos"], report["numHints"]) == (0, 0, 0, 0), report["messages"]
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.faces) <= 120 and back.visual.material.normalTexture is not None
    nmap = np.asarray(back.visual.material.normalTexture.convert("RGB"))
    assert nmap.shape[:2] == (64, 64) and np.median(nmap[..., 2]) > 200  # mostly unperturbed: both are spheres
    r = CliRunner().invoke(cli, ["export", str(run), "--normal-map"])
    assert r.exit_code == 2 and "needs --faces" in r.output
    r = CliRunner().invoke(cli, ["export", str(run), "--faces", "100", "--normal-map", "--format", "ply"])
    assert r.exit_code == 2 and "GLB / glTF" in r.output
