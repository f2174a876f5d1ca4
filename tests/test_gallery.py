"""The batch gallery in a real headless Chromium (Debian's package), from file:// and from a local server."""
import base64
import functools
import http.server
import io
import os
import shutil
import subprocess
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from meshdream.batching.gallery import write_gallery

VIEWER_BACKGROUND = (0xEE, 0xF1, 0xF4)  # model-viewer's background colour in the page's CSS


@pytest.fixture(scope="session")
def chromium() -> str:
    """/usr/bin/chromium, installed from Debian's packages when missing (CI machines start without it)."""
    path = shutil.which("chromium")
    if path is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.fail("the gallery test needs Debian's chromium: apt-get install chromium (as root)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if r.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
        path = shutil.which("chromium")
    assert path, "chromium is not on PATH after apt-get install chromium"
    return path


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, tiny_configs):
    """A batch folder made like `meshdream batch` makes one: two RUNs by `generate`, one failed prompt, the index."""
    from meshdream.stages.generate import generate

    out = tmp_path_factory.mktemp("gallery") / "out"
    jobs = []
    for prompt, slug in (("a red cube", "a-red-cube"), ("a blue sphere & <b>more</b>", "a-blue-sphere-b-more-b")):
        timings = {}
        with warnings.catch_warnings():  # the tiny prior knows none of the words
            warnings.simplefilter("ignore")
            generate(prompt, out / slug, coarse_config=tiny_configs["coarse"], refine_config=tiny_configs["refine"],
                     video=False, progress=False, timings=timings)
        jobs.append({"prompt": prompt, "slug": slug, "status": "done", "seed": 0, "run": slug, "attempts": 1,
                     "times": timings, "peak_memory_mb": 600.0, "asset": f"{slug}/export/model.glb",
                     "turntable": f"{slug}/turntable.gif", "error": None})
    jobs.append({"prompt": "a yellow cone", "slug": "a-yellow-cone", "status": "failed", "seed": 0, "run": "a-yellow-cone",
                 "attempts": 2, "times": {"total": 3.0}, "peak_memory_mb": 500.0, "asset": None, "turntable": None,
                 "error": "the density never exceeds the extraction threshold"})
    index = {"version": 1, "jobs": jobs, "updated": "2026-01-01T00:00:00+00:00"}
    write_gallery(out, index)
    return out, index


def test_page_is_self_contained_and_escapes_prompts(gallery):
    gallery, index = gallery
    page = (gallery / "index.html").read_text()
    assert '<script src="gallery/model-viewer-umd.min.js"></script>' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing from the network
    assert "a blue sphere &amp; &lt;b&gt;more&lt;/b&gt;" in page and "<b>more</b>" not in page
    for name in ("model-viewer-umd.min.js", "LICENSE-model-viewer.txt", "LICENSE-three.txt", "LICENSE-lit.txt"):
        assert (gallery / "gallery" / name).is_file()
    assert (gallery / "gallery" / "models" / "a-red-cube.js").is_file()
    before = (gallery / "gallery" / "models" / "a-red-cube.js").stat().st_mtime_ns
    write_gallery(gallery, index)  # rewriting keeps an up-to-date embedded model
    assert (gallery / "gallery" / "models" / "a-red-cube.js").stat().st_mtime_ns == before


def _serve(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _drawn_fraction(png: bytes) -> float:
    """Fraction of a viewer's pixels that differ clearly from its empty background."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float((np.abs(image - np.array(VIEWER_BACKGROUND)).max(axis=-1) > 24).mean())


@pytest.mark.parametrize("where", ["file", "server"])
def test_every_asset_is_drawn_in_headless_chromium_without_console_errors(gallery, chromium, where):
    from playwright.sync_api import sync_playwright

    gallery, _ = gallery
    server = _serve(gallery) if where == "server" else None
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html" if server else (gallery / "index.html").as_uri()
    errors = []
    try:
        with sync_playwright() as p:
            # software WebGL (SwiftShader): no GPU on CI machines
            browser = p.chromium.launch(executable_path=chromium, args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(url)
            viewers = page.locator("model-viewer")
            assert viewers.count() == 2
            page.wait_for_function("Array.from(document.querySelectorAll('model-viewer')).every(v => v.loaded && v.modelIsVisible)",
                                   timeout=60_000)
            page.evaluate("Promise.all(Array.from(document.querySelectorAll('model-viewer')).map(v => v.updateComplete))")
            page.wait_for_timeout(500)  # let the first frames land on the canvases
            for i in range(2):
                viewer = viewers.nth(i)
                viewer.evaluate("v => { v.autoRotate = false; }")
                fraction = _drawn_fraction(viewer.screenshot())
                assert fraction > 0.05, f"viewer {i} looks blank ({fraction:.3f} of its pixels drawn)"
                # the canvas itself, not just the page around it, holds the render
                data = viewer.evaluate("v => v.toDataURL('image/png')")
                canvas = Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1])))
                alpha = np.asarray(canvas.convert("RGBA"))[..., 3]
                assert (alpha > 0).mean() > 0.05, f"viewer {i}: its canvas is empty"
            # turntable previews keep their aspect ratio (a sphere's views stay round, not tall ellipses)
            page.wait_for_function("Array.from(document.querySelectorAll('img.turntable')).every(i => i.complete && i.naturalWidth)")
            shapes = page.evaluate("Array.from(document.querySelectorAll('img.turntable')).map(i => "
                                   "[i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width, i.getBoundingClientRect().height])")
            assert len(shapes) == 2
            for natural_w, natural_h, shown_w, shown_h in shapes:
                assert shown_h > 0 and abs(shown_w / shown_h - natural_w / natural_h) < 0.02 * natural_w / natural_h, shapes
            assert "a yellow cone" in page.content() and "extraction threshold" in page.content()
            browser.close()
    finally:
        if server:
            server.shutdown()
    assert not errors, errors
