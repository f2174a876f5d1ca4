"""3D-print export: binary STL and 3MF of one closed solid in millimetres, +Z up, checked by loading them back
(trimesh) and by a slicer-grade checker (Debian's admesh)."""
import io
import os
import re
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdream.asset.formats import write_asset
from meshdream.asset.model import Asset
from meshdream.cli import cli
from meshdream.errors import UserInputError
from meshdream.stages.export import export
from meshdream.asset.printing import NotSolidError, binary_stl, print_solid


def seam_split_ellipsoid(radii=(0.3, 0.6, 0.2)) -> Asset:
    """A textured ellipsoid (tallest along +Y, the scene's up) split along its UV seams, as refine writes one."""
    from meshdream.mesh.uv import unwrap

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    v = np.asarray(sphere.vertices * np.array(radii), np.float32)
    uv = unwrap(v, np.asarray(sphere.faces), resolution=64)
    return Asset(v[uv.vmapping], uv.faces.astype(np.int64), uvs=uv.uvs, texture=np.full((64, 64, 3), 200, np.uint8))


@pytest.fixture(scope="session")
def admesh() -> str:
    """/usr/bin/admesh, installed from Debian's packages when missing (CI machines start without it)."""
    path = shutil.which("admesh")
    if path is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.fail("the print test needs Debian's admesh: apt-get install admesh (as root)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", "admesh"]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if r.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
        path = shutil.which("admesh")
    assert path, "admesh is not on PATH after apt-get install admesh"
    return path


def _admesh_report(admesh: str, path) -> dict:
    r = subprocess.run([admesh, str(path)], capture_output=True, text=True, timeout=60)  # checks only: no -w / -a output
    assert r.returncode == 0, r.stderr
    out = r.stdout
    nums = {}
    for key, pattern in (("type", r"File type\s*:\s*(.+)"), ("parts", r"Number of parts\s*:\s*(\d+)"),
                         ("disconnected", r"Total disconnected facets\s*:\s*(\d+)\s+(\d+)"),
                         ("reversed", r"Facets reversed\s*:\s*(\d+)"), ("normals_fixed", r"Normals fixed\s*:\s*(\d+)"),
                         ("backwards", r"Backwards edges\s*:\s*(\d+)"), ("degenerate", r"Degenerate facets\s*:\s*(\d+)"),
                         ("volume", r"Volume\s*:\s*([-\d.]+)"), ("max_z", r"Max Z =\s*([-\d.]+)"), ("min_z", r"Min Z =\s*([-\d.]+)")):
        m = re.search(pattern, out)
        assert m, f"admesh printed no {key!r}:\n{out}"
        nums[key] = m.group(1).strip()
    return nums


def test_stl_is_one_closed_outward_solid_in_mm_with_z_up(tmp_path, admesh):
    path = write_asset(seam_split_ellipsoid(), tmp_path / "model.stl", "stl", size_mm=80.0)
    data = path.read_bytes()
    assert not data[:5].lower().startswith(b"solid")  # binary, not mistaken for ASCII STL
    n = int.from_bytes(data[80:84], "little")
    assert len(data) == 84 + 50 * n
    mesh = trimesh.load(path, force="mesh")  # trimesh welds STL corners on load
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.body_count == 1
    assert mesh.volume > 0  # normals point out
    lo, hi = mesh.bounds
    assert np.isclose((hi - lo).max(), 80.0, atol=1e-3)  # longest side
    assert np.argmax(hi - lo) == 2  # the asset's +Y (up) is the print's +Z
    assert np.isclose(lo[2], 0.0, atol=1e-4) and np.allclose((lo + hi)[:2] / 2, 0, atol=1e-3)  # on the plate, centred
    stored = np.frombuffer(data[84:], dtype=np.dtype([("n", "<f4", 3), ("c", "<f4", (3, 3)), ("a", "<u2")]))["n"]
    centres = trimesh.load(path, force="mesh", process=False).triangles_center - mesh.centroid  # [n, 3], file order
    assert (np.einsum("ij,ij->i", stored, centres) > 0).all()  # the stored normals face out (a convex solid)
    report = _admesh_report(admesh, path)
    assert report["type"].startswith("Binary STL")
    assert report["parts"] == "1" and report["disconnected"] == "0"
    assert report["reversed"] == report["normals_fixed"] == report["backwards"] == report["degenerate"] == "0"
    assert float(report["volume"]) > 0 and float(report["min_z"]) == pytest.approx(0, abs=1e-4)
    assert float(report["max_z"]) == pytest.approx(80.0, abs=1e-3)


def test_3mf_holds_the_same_solid_in_millimetres(tmp_path):
    asset = seam_split_ellipsoid()
    write_asset(asset, tmp_path / "model.stl", "stl", size_mm=30.0)
    path = write_asset(asset, tmp_path / "model.3mf", "3mf", size_mm=30.0)
    model = zipfile.ZipFile(io.BytesIO(path.read_bytes())).read("3D/3dmodel.model").decode()
    assert 'unit="millimeter"' in model
    threemf = trimesh.load(path, force="mesh")
    stl = trimesh.load(tmp_path / "model.stl", force="mesh")
    assert threemf.is_watertight and threemf.body_count == 1 and threemf.volume > 0
    assert np.allclose(threemf.bounds, stl.bounds, atol=1e-3)
    assert np.isclose(threemf.volume, stl.volume, rtol=1e-4)


def test_export_stage_and_cli_write_print_files_and_refuse_bad_sizes(tmp_path):
    from test_export import textured_run

    run = textured_run(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["export", str(run), "--format", "stl", "--size-mm", "120"])
    assert r.exit_code == 0, r.output
    mesh = trimesh.load(run / "export" / "model.stl", force="mesh")
    assert mesh.is_watertight and np.isclose(mesh.extents.max(), 120.0, atol=1e-3)
    assert export(run, format="3mf").name == "model.3mf"  # default size
    assert np.isclose(trimesh.load(run / "export" / "model.3mf", force="mesh").extents.max(), 50.0, atol=1e-3)
    for args, words in ((["--format", "stl", "--size-mm", "0"], ["--size-mm 0.0", "0.1 to 10000"]),
                        (["--format", "glb", "--size-mm", "10"], ["--size-mm", "stl or 3mf", "'glb'"])):
        r = runner.invoke(cli, ["export", str(run), *args])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert all(w in r.output for w in words), r.output
    with pytest.raises(UserInputError, match="nan"):
        export(run, format="stl", size_mm=float("nan"))


def test_an_open_surface_is_refused_with_a_message_not_written(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    keep = sphere.triangles_center[:, 1] < 0.5  # a bowl: the top cap cut away
    bowl = Asset(np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces[keep]), colours=np.full((len(sphere.vertices), 3), 90, np.uint8))
    with pytest.raises(NotSolidError, match="open edges"):
        write_asset(bowl, tmp_path / "bowl.stl", "stl")
    assert not (tmp_path / "bowl.stl").exists()
    hole = Asset(bowl.vertices, np.asarray(sphere.faces[1:]), colours=bowl.colours)  # one missing triangle: filled
    assert print_solid(hole).is_watertight


@settings(max_examples=25, deadline=None)
@given(radii=st.tuples(*[st.floats(0.05, 3.0)] * 3), size=st.floats(1.0, 500.0))
def test_longest_side_and_orientation_for_any_box(radii, size):
    box = trimesh.creation.box(extents=radii)
    solid = print_solid(Asset(np.asarray(box.vertices, np.float32), np.asarray(box.faces), colours=np.zeros((8, 3), np.uint8)), size)
    assert np.isclose(solid.extents.max(), size, rtol=1e-6)
    assert np.allclose(solid.extents, np.array([radii[0], radii[2], radii[1]]) * size / max(radii), rtol=1e-6)  # y -> z
    assert solid.volume > 0 and np.isclose(solid.bounds[0, 2], 0, atol=1e-9)


def test_binary_stl_header_never_reads_as_ascii():
    data = binary_stl(np.eye(3), np.array([[0, 1, 2]]), "solid looking header")
    assert not data.startswith(b"solid") and len(data) == 84 + 50
