"""`meshdream app` in a real headless Chromium (Debian's, driven by Playwright): a run from the page to a GLB
that the Khronos validator accepts, the page surviving a reload mid-run, bad input and a failing run as
messages; and the runner's cancel and resume on a RUN folder."""
import io
import json
import socket
import time
import warnings

import numpy as np
import pytest
import yaml
from PIL import Image
from test_export import gltf_validator  # noqa: F401  (the Khronos validator fixture)
from test_gallery import chromium  # noqa: F401  (Debian's chromium, installed when missing)

pytest.importorskip("gradio", reason="the app extra: pip install 'meshdream[app]' (the test extra installs it)")

from meshdream.engine.checkpoint import load_checkpoint  # noqa: E402
from meshdream.app.runs import Runner, Settings, check_settings, example_prompts  # noqa: E402

CLEAR = np.array([0.93, 0.945, 0.957]) * 255  # the viewer's background (page.py)
RUN_TIMEOUT_MS = 240_000  # a tiny run takes ~15 s on an idle 2-core machine; a busy one is slower
LAUNCH_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # software WebGL, as in test_gallery


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_configs):
    """`meshdream app` serving from this process on a free port, with the tiny prior's configs."""
    from meshdream.app.page import serve

    runs = tmp_path_factory.mktemp("app") / "runs"
    port = _free_port()
    page = serve(runs, port=port, coarse_config=tiny_configs["coarse"], refine_config=tiny_configs["refine"], block=False)
    yield f"http://127.0.0.1:{port}/", page.runner
    page.runner.wait(60)
    page.close()


def _browser(p, chromium):  # noqa: F811
    return p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)


def _watch(page, url):
    """Record requests that leave the machine and page errors."""
    seen = {"external": [], "errors": []}
    page.on("request", lambda r: seen["external"].append(r.url)
            if not r.url.startswith((url, "data:", "blob:")) else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    return seen


def _fill(page, prompt, coarse="4", refine="2", guidance=None):
    page.locator("#md-prompt textarea").fill(prompt)
    page.locator("#md-coarse-steps input").fill(coarse)
    page.locator("#md-refine-steps input").fill(refine)
    if guidance is not None:
        page.locator("#md-guidance textarea").fill(guidance)


def _viewer_drawn(page) -> float:
    """Fraction of the 3D viewer's canvas that differs clearly from its empty background."""
    png = page.locator("#md-viewer canvas").screenshot()
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return float((np.abs(image - CLEAR).max(axis=-1) > 24).mean())


def test_a_run_from_the_page_to_a_valid_glb_surviving_a_reload(app, chromium, gltf_validator, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, runner = app
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        seen = _watch(page, url)
        page.goto(url)
        _fill(page, "a red cube")
        page.locator("#md-generate").click()
        page.wait_for_function("document.querySelector('#md-progress')?.dataset.state === 'running'", timeout=60_000)
        page.wait_for_function("document.querySelector('#md-preview img')", timeout=RUN_TIMEOUT_MS)  # a live preview
        assert runner.busy()
        page.reload()  # the run goes on; the reloaded page follows it
        page.wait_for_function("document.querySelector('#md-status')?.innerText.includes('Running')", timeout=60_000)
        page.wait_for_function("document.querySelector('#md-status')?.innerText.startsWith('Done')", timeout=RUN_TIMEOUT_MS)
        assert page.locator("#md-progress").get_attribute("data-state") == "done"
        page.wait_for_selector("#md-viewer canvas", timeout=60_000)
        deadline = time.time() + 60
        while _viewer_drawn(page) < 0.01 and time.time() < deadline:  # babylon.js loads the GLB, then draws it
            page.wait_for_timeout(500)
        assert _viewer_drawn(page) >= 0.01, "the 3D viewer shows no model"
        links = page.locator("#md-downloads a")
        names = [links.nth(i).get_attribute("download") for i in range(links.count())]
        assert "model.glb" in names and "model.obj" in names and "model.stl" in names and any(n.endswith(".zip") for n in names)
        with page.expect_download() as download:
            page.locator("#md-downloads a[download='model.glb']").click()
        glb = tmp_path / "downloaded.glb"
        download.value.save_as(glb)
        report = gltf_validator(glb)
        assert report["numErrors"] == 0, report["messages"]
        assert page.locator("#md-turntable img").count() == 1
        assert "a red cube" in page.locator("#md-runs input").input_value()  # the list of runs shows the new one
        browser.close()
    assert not seen["external"], seen["external"]  # offline: nothing fetched from the internet
    assert not seen["errors"], seen["errors"]


def test_bad_input_is_a_message_and_a_failing_run_leaves_the_app_serving(app, chromium, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, runner = app
    broken = tmp_path / "broken-model"  # a diffusers folder whose weights are missing: the run itself fails
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "MeshdreamPriorPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        seen = _watch(page, url)
        page.goto(url)
        status = page.locator("#md-status")
        for prompt, coarse, words in (("  ", "4", ["empty"]), ("a red dragon", "4", ["does not know", "'dragon'", "cube"]),
                                      ("a red cube", "0", ["coarse steps", "out of range", "1 to 20000"])):
            _fill(page, prompt, coarse=coarse)
            page.locator("#md-generate").click()
            page.wait_for_function(f"document.querySelector('#md-status .error')?.innerText.includes({json.dumps(words[0])})",
                                   timeout=30_000)
            text = status.inner_text()
            assert all(w in text for w in words) and "Traceback" not in text, text
        assert not runner.busy()
        _fill(page, "a red cube", guidance=str(broken))
        page.locator("#md-generate").click()
        page.wait_for_function("document.querySelector('#md-status .error')?.innerText.startsWith('Run failed')", timeout=120_000)
        text = status.inner_text()
        assert "Traceback" not in text and len(text) < 2000, text
        runner.wait(30)
        assert not runner.busy()
        _fill(page, "", guidance="")  # the app still answers
        page.locator("#md-generate").click()
        page.wait_for_function("document.querySelector('#md-status .error')?.innerText.includes('empty')", timeout=30_000)
        browser.close()
    assert not seen["errors"], seen["errors"]
    failed = [f for f in runner.runs.iterdir() if json.loads((f / "app.json").read_text() if (f / "app.json").is_file() else "{}").get("status") == "failed"]
    assert failed and "Traceback" not in json.loads((failed[0] / "app.json").read_text())["error"]


def test_cancel_keeps_a_checkpoint_and_resume_finishes_the_run(tmp_path, tiny_configs):
    runner = Runner(tmp_path / "runs", coarse_config=tiny_configs["coarse"], refine_config=tiny_configs["refine"])
    guidance = yaml.safe_load(open(tiny_configs["coarse"]))["guidance"]["name"]
    settings = check_settings({"prompt": "a blue torus", "seed": 3, "guidance": guidance, "coarse_steps": 4, "refine_steps": 2},
                              presets=[])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = runner.start(settings)
        while not (runner.progress.stage == "coarse" and runner.progress.done >= 1):
            time.sleep(0.05)
        runner.cancel()
        runner.wait(120)
        info = runner.info(run)
        assert info["status"] == "cancelled" and "Resume" in info["error"], info
        saved = load_checkpoint(run / "coarse" / "checkpoint.pt")
        assert saved["stage"] == "coarse" and 1 <= saved["step"] < 4  # checkpointed where it stopped (every 2 by config)
        assert [name for _, name in runner.listing()] == [run.name] and "cancelled" in runner.listing()[0][0]
        runner.start(Settings(**info["settings"]), resume=run)
        runner.wait(180)
    info = runner.info(run)
    assert info["status"] == "done", info
    assert (run / "export" / "model.glb").is_file() and (run / "export" / "model.stl").is_file()
    assert set(info["downloads"]) == {"glb", "obj", "stl", "zip"}
    import zipfile

    names = zipfile.ZipFile(info["downloads"]["zip"]).namelist()
    assert f"{run.name}/export/model.glb" in names and not any(n.endswith(".meshdream.lock") for n in names)


def test_examples_come_from_the_prior_metadata():
    from meshdream.guidance.loading import embedded_prior_path

    meta = json.loads((embedded_prior_path() / "meshdream_prior.json").read_text())
    examples = example_prompts("embedded", limit=100)
    assert len(examples) == len(meta["shapes"]) * len(meta["colours"]) and len(set(examples)) == len(examples)
    assert {e.split()[-1] for e in examples} == set(meta["shapes"]) and {e.split()[-2] for e in examples} == set(meta["colours"])
    assert all(check_settings({"prompt": e, "seed": 0}, presets=[]).prompt == e for e in example_prompts("embedded"))
    assert example_prompts("embedded")[:2] != example_prompts("embedded")[:1] * 2


def test_settings_are_checked_with_messages_that_name_the_value():
    for raw, words in (({"prompt": "a red cube", "seed": -1}, ["seed", "-1", "0 to"]),
                       ({"prompt": "a red cube", "seed": 1.5}, ["seed", "1.5"]),
                       ({"prompt": "a red cube", "seed": 0, "refine_steps": 20001}, ["refine steps", "20001"]),
                       ({"prompt": "a red cube", "seed": 0, "preset": "xl"}, ["preset", "'xl'", "sd"]),
                       ({"prompt": "a red cube", "seed": 0, "guidance": "./no/such/folder"}, ["./no/such/folder"])):
        with pytest.raises(Exception) as e:
            check_settings(raw, presets=["sd", "if"])
        assert all(w in str(e.value) for w in words), (raw, str(e.value))
    ok = check_settings({"prompt": " a red cube ", "seed": 7, "coarse_steps": "", "refine_steps": 3}, presets=["sd"])
    assert (ok.prompt, ok.seed, ok.coarse_steps, ok.refine_steps, ok.guidance) == ("a red cube", 7, None, 3, "embedded")
