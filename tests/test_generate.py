import numpy as np
import trimesh
from click.testing import CliRunner
from PIL import Image

import meshdream
from meshdream.cli import cli


def test_python_api_exports_the_stage_functions():
    from meshdream import coarse, export, generate, refine

    import inspect

    from meshdream.stages import coarse as coarse_mod, export as export_mod, generate as generate_mod, refine as refine_mod

    # the stage functions themselves (under their run-lock and device-error wrappers), not look-alikes
    stages = {coarse: coarse_mod.coarse, refine: refine_mod.refine, export: export_mod.export, generate: generate_mod.generate}
    assert all(api is stage for api, stage in stages.items())
    assert list(inspect.signature(coarse).parameters)[:2] == ["prompt", "out"]
    assert list(inspect.signature(refine).parameters)[:1] == ["run"] and meshdream.__version__


def test_generate_cli_makes_a_textured_glb_and_turntable(tmp_path, tiny_configs, monkeypatch):
    from meshdream.stages import render as turntable

    # the real turntable path, at a test's size: 8 frames of 64 px instead of 100 of 512 (checked in test_turntable)
    monkeypatch.setattr(turntable, "VIDEO_SIZE", 64)
    monkeypatch.setitem(turntable.DEFAULT_VIEWS, "mp4", 8)
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["generate", "a red cube", "--out", str(out), "--coarse-config", tiny_configs["coarse"],
                                 "--refine-config", tiny_configs["refine"], "--quiet"])
    assert r.exit_code == 0, r.output
    glb = out / "export" / "model.glb"
    assert glb.is_file() and "asset:" in r.output
    mesh = trimesh.load(glb, process=False, force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.uv is not None
    gif = Image.open(out / "turntable.gif")
    assert gif.n_frames == 24
    frames = []
    for i in (0, 6):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB"), dtype=float))
    for frame in frames:  # lit | normals side by side, each the asset framed on white: white corners, an object in the middle
        assert frame.shape[1] == 2 * frame.shape[0]
        for view in (frame[:, : frame.shape[1] // 2], frame[:, frame.shape[1] // 2:]):
            h, w, _ = view.shape
            corners = view[[0, 0, -1, -1], [0, -1, 0, -1]]
            drawn = (view < 235).any(-1)
            assert (corners > 240).all() and drawn[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2].all()
            assert 0.02 < drawn.mean() < 0.8 and not drawn[0].any() and not drawn[-1].any()
    import imageio_ffmpeg

    meta = next(imageio_ffmpeg.read_frames(str(out / "turntable.mp4")))
    assert meta["codec"].startswith("h264") and tuple(meta["size"]) == (128, 64)


def test_generate_resume_skips_finished_stages(tmp_path, tiny_configs):
    from meshdream.stages.generate import generate

    out = tmp_path / "run"
    generate("a red cube", out, coarse_config=tiny_configs["coarse"], refine_config=tiny_configs["refine"], progress=False,
             video=False)
    before = (out / "coarse" / "mesh.ply").stat().st_mtime_ns, (out / "refine" / "mesh.obj").stat().st_mtime_ns
    path = generate("a red cube", out, resume=True, format="ply", progress=False, video=False)
    assert path.suffix == ".ply" and path.is_file()
    after = (out / "coarse" / "mesh.ply").stat().st_mtime_ns, (out / "refine" / "mesh.obj").stat().st_mtime_ns
    assert before == after
