import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_export import textured_run

from meshdream.asset.loading import load_asset
from meshdream.cli import cli
from meshdream.engine.run import RunDir
from meshdream.stages.render import mp4_bytes, render_run, turntable_frames, turntable_of_run


def _mp4_info(path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    return meta, frames


def test_frames_show_a_lit_view_beside_a_normals_view(tmp_path):
    asset = load_asset(RunDir(textured_run(tmp_path)))
    frames = turntable_frames(asset, 4, 64)
    assert frames.shape == (4, 64, 128, 3)
    lit, normals = frames[0, :, :64].astype(int), frames[0, :, 64:].astype(int)
    centre = (slice(24, 40), slice(24, 40))
    # the sphere's front faces the camera (+Z): normals (0, 0, 1) -> blue-ish (128, 128, 255)
    assert normals[centre][..., 2].mean() > 200 and abs(normals[centre][..., 0].mean() - 128) < 40
    assert (lit[0, 0] == 255).all() and (normals[0, 0] == 255).all()  # white background
    # shading: the sphere is not one flat colour
    assert lit[16:48, 16:48].std() > 10



def test_shading_only_covered_pixels_gives_the_full_frame_result(tmp_path):
    """iter_views shades the covered pixels alone (speed): the frames equal shading every pixel and
    painting the background white afterwards, byte for byte."""
    import torch

    from meshdream import raster as dr
    from meshdream.asset.model import normals_of
    from meshdream.render.cameras import turntable_cameras
    from meshdream.render.shading import shade
    from meshdream.stages.render import _key_lights, _texture_of, iter_views

    asset = load_asset(RunDir(textured_run(tmp_path)))
    cams = turntable_cameras(3, elevation_deg=15.0, distance=2.0)
    ours = np.concatenate(list(iter_views(asset, cams, 48)))
    ctx = dr.get_context("cpu")
    uvs, texture = _texture_of(asset)
    v = torch.from_numpy(np.ascontiguousarray(asset.vertices, np.float32))
    tri = torch.from_numpy(np.ascontiguousarray(asset.faces, np.int32))
    attrs = torch.cat([v, torch.from_numpy(normals_of(asset)), torch.from_numpy(np.ascontiguousarray(uvs, np.float32))], -1)
    pos = torch.einsum("bij,vj->bvi", cams.mvp(), torch.cat([v, torch.ones_like(v[:, :1])], -1)).contiguous()
    rast, _ = dr.rasterize(ctx, pos, tri, (48, 48))
    interp, _ = dr.interpolate(attrs.unsqueeze(0).contiguous(), rast, tri)
    n = interp[..., 3:6] / interp[..., 3:6].norm(dim=-1, keepdim=True).clamp_min(1e-8)
    albedo = dr.texture(torch.from_numpy(np.ascontiguousarray(texture)).unsqueeze(0), interp[..., 6:8].contiguous(),
                        filter_mode="linear", boundary_mode="clamp")
    lit = shade(albedo, n, interp[..., :3], _key_lights(cams).view(-1, 1, 1, 3), "lambertian", 0.35, 0.75)
    mask = (rast[..., 3:4] > 0).float()
    colour = dr.antialias((torch.cat([lit, n * 0.5 + 0.5], -1) * mask + (1 - mask)).contiguous(), rast, pos, tri)
    full = (torch.flip(colour, dims=[1]).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert 0.05 < mask.mean() < 0.95
    np.testing.assert_array_equal(ours, full)

def test_mp4_is_h264_at_the_asked_size_and_length(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (10, 32, 64, 3), dtype=np.uint8)
    path = tmp_path / "t.mp4"
    path.write_bytes(mp4_bytes(frames, fps=5))
    meta, back = _mp4_info(path)
    assert meta["codec"].startswith("h264") and tuple(meta["size"]) == (64, 32) and meta["fps"] == 5
    assert len(back) == 10 and abs(meta["duration"] - 2.0) < 0.3


def test_generate_turntables_gif_and_mp4(tmp_path, monkeypatch):
    from meshdream.stages import render as turntable

    run = textured_run(tmp_path)
    for name, value in (("GIF_VIEWS", 4), ("GIF_SIZE", 32), ("VIDEO_SIZE", 64)):
        monkeypatch.setattr(turntable, name, value)
    monkeypatch.setitem(turntable.DEFAULT_VIEWS, "mp4", 8)
    written = turntable_of_run(RunDir(run))
    assert written == [run / "turntable.gif", run / "turntable.mp4"]
    assert Image.open(run / "turntable.gif").n_frames == 4
    meta, frames = _mp4_info(run / "turntable.mp4")
    assert tuple(meta["size"]) == (128, 64) and len(frames) == 8 and meta["codec"].startswith("h264")


def test_gif_encoded_beside_the_mp4_gives_the_same_files(tmp_path, monkeypatch):
    """turntable_of_run encodes the GIF on a worker thread while the MP4 renders: both files equal encoding
    them one after the other, byte for byte; when the MP4 fails the GIF is still written."""
    from meshdream.stages import render as turntable

    run = textured_run(tmp_path)
    for name, value in (("GIF_VIEWS", 4), ("GIF_SIZE", 32), ("VIDEO_SIZE", 64)):
        monkeypatch.setattr(turntable, name, value)
    monkeypatch.setitem(turntable.DEFAULT_VIEWS, "mp4", 6)
    turntable_of_run(RunDir(run))
    asset = load_asset(RunDir(run))
    assert (run / "turntable.gif").read_bytes() == turntable.gif_bytes(turntable_frames(asset, 4, 32))
    assert (run / "turntable.mp4").read_bytes() == mp4_bytes(turntable.iter_turntable_frames(asset, 6, 64))

    (run / "turntable.gif").unlink()
    (run / "turntable.mp4").unlink()

    def broken(frames):
        raise OSError("no ffmpeg")

    monkeypatch.setattr(turntable, "mp4_bytes", broken)
    with pytest.raises(OSError, match="no ffmpeg"):
        turntable_of_run(RunDir(run))
    assert Image.open(run / "turntable.gif").n_frames == 4 and not (run / "turntable.mp4").exists()


def test_default_turntable_is_512px_and_4_to_6_seconds():
    from meshdream.render import video
    from meshdream.stages import render as turntable

    seconds = turntable.DEFAULT_VIEWS["mp4"] / video.MP4_FPS
    assert 4 <= seconds <= 6 and turntable.VIDEO_SIZE >= 512


@pytest.mark.parametrize("fmt", ["png", "gif", "mp4"])
def test_render_command(tmp_path, fmt):
    run = textured_run(tmp_path)
    r = CliRunner().invoke(cli, ["render", str(run), "--views", "3", "--size", "48", "--format", fmt])
    assert r.exit_code == 0, r.output
    path = run / f"render.{fmt}"
    assert path.is_file() and str(path) in r.output
    if fmt == "png":
        assert Image.open(path).size == (96, 3 * 48)


def test_render_errors(tmp_path):
    r = CliRunner().invoke(cli, ["render", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(cli, ["render", str(tmp_path), "--format", "avi"])
    assert r.exit_code == 2 and "'avi' is not one of" in r.output
    r = CliRunner().invoke(cli, ["render", str(tmp_path), "--size", "8"])
    assert r.exit_code == 2 and "--size" in r.output
    with pytest.raises(Exception, match="neither a refined nor a coarse mesh"):
        render_run(tmp_path, format="png")
