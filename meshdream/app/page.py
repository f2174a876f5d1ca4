"""The web page of ``meshdream app`` (Gradio): a prompt and settings, live progress per stage with the
latest preview, a 3D viewer of the GLB, the turntable, downloads, and the runs made here before.

Every control calls :class:`meshdream.app.runs.Runner`, which calls ``meshdream.generate`` / ``export``:
the page holds no pipeline of its own. Runs go through Gradio's queue one at a time (a waiting page
shows its position); the page follows the active run by polling, so a reloaded page picks it up again.
Works offline: Gradio's frontend (its babylon.js 3D viewer included) is served from the installed
package, analytics are off, and the theme uses the system's fonts.
"""
from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Iterator, Optional

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no calls home (set before gradio is imported)

from ..errors import MeshdreamError, UserInputError  # noqa: E402
from .runs import STAGES, Progress, Runner, check_settings, example_prompts  # noqa: E402

POLL_S = 0.5  # how often a page following a run looks at its progress
CSS = """
#md-progress .row { display: grid; grid-template-columns: 5.5rem 1fr 7rem; gap: 0.6rem; align-items: center; margin: 0.2rem 0; }
#md-progress progress { width: 100%; height: 0.9rem; }
#md-progress .note { color: var(--body-text-color-subdued); font-size: 0.85rem; }
#md-status .error { color: #cf222e; }
"""


def _default_guidance(coarse_config) -> str:
    """The guidance model of the server's coarse config (a YAML path or None), else the embedded prior."""
    from ..config import stage_config
    from ..stages.coarse import CoarseConfig

    return stage_config(CoarseConfig, coarse_config, {}).guidance.name if coarse_config else "embedded"


def _default_steps(cls, config) -> int:
    from ..config import stage_config

    return int(stage_config(cls, config, {}).iters)


def progress_html(progress: Optional[Progress], state: str) -> str:
    """One bar per stage; ``state``: running / done / cancelled / failed / idle."""
    rows = []
    for stage in STAGES:
        if progress is None:
            value, total, note = 0, 1, "–"
        elif stage in progress.stages_done or progress.stage == "done" or (state == "done"):
            value, total, note = 1, 1, "done"
        elif stage == progress.stage:
            total = progress.total or max(progress.done, 1)
            value, note = progress.done, (f"{progress.done} / {progress.total} steps" if stage != "export" else "writing files")
        else:
            value, total, note = 0, 1, "waiting"
        rows.append(f'<div class="row" data-stage="{stage}"><span>{stage}</span><progress value="{value}" max="{total}"></progress>'
                    f'<span class="note">{html.escape(note)}</span></div>')
    return f'<div id="md-progress" data-state="{html.escape(state)}">{"".join(rows)}</div>'


def status_html(text: str, error: bool = False) -> str:
    cls = ' class="error"' if error else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def build(runner: Runner, guidance: Optional[str] = None):
    """The page (a gradio.Blocks) for ``runner``; ``guidance``: the model the guidance field starts with."""
    import gradio as gr

    from ..config import SEED_MAX, preset_names
    from ..stages.coarse import CoarseConfig
    from ..stages.refine import RefineConfig

    presets = preset_names()
    guidance = guidance or _default_guidance(runner.coarse_config)
    examples = example_prompts(guidance)

    def runs_choices(value=None):
        choices = runner.listing()
        return gr.Dropdown(choices=choices, value=value if value in [c[1] for c in choices] else None)

    def finished_view(run: Path, message: Optional[str] = None):
        """Outputs for a run that is not running: its asset, turntable, downloads and status."""
        info = runner.info(run)
        status = info.get("status", "?")
        glb = run / "export" / "model.glb"
        files = [f for f in (info.get("downloads") or {}).values() if f and Path(f).is_file()]
        if status == "done" and not files:  # a run from before downloads were kept: offer what is there
            files = [str(p) for p in (glb, run / "export" / "model.obj", run / "export" / "model.stl") if p.is_file()]
        error = status in ("failed", "cancelled")
        text = message or {"done": f"Done: {info.get('prompt', '')!r} ({run.name}).",
                           "failed": f"Run failed: {info.get('error')}",
                           "cancelled": f"Cancelled: {info.get('error')}",
                           "running": f"{run.name} stopped without finishing (the server was stopped); Resume continues it."
                           }.get(status, f"{run.name}: {status}")
        notes = " ".join(info.get("notes") or [])
        preview = runner._newest_preview(run)
        return (status_html(text + (f" {notes}" if notes else ""), error=error),
                progress_html(Progress(stage="done") if status == "done" else None, status), preview,
                str(run / "turntable.gif") if (run / "turntable.gif").is_file() else None,
                files or None, runs_choices(run.name), run.name)

    def running_view(run: Path, progress: Progress):
        p = progress
        where = f"{p.stage} step {p.done}" + (f" of {p.total}" if p.total else "") if p.stage not in ("export", "done") else "export"
        return (status_html(f"Running {runner.info(run).get('prompt', '')!r}: {where}."), progress_html(p, "running"),
                p.preview, gr.skip(), gr.skip(), gr.skip(), gr.skip())

    def viewer_of(name):
        """The 3D viewer's file for the page's current run (set by a plain event after a run's generator
        ends: Gradio's Model3D loses a model whose value arrives twice, as a generator's last output does)."""
        try:
            run = runner.folder(name) if name else None
        except MeshdreamError:
            return None
        glb = run / "export" / "model.glb" if run is not None else None
        if glb is None or not glb.is_file() or runner.info(run).get("status") != "done" or runner.active == run:
            return None
        return str(glb)

    def follow(run: Path) -> Iterator[tuple]:
        """Yield the page's outputs while ``run`` is active, then its finished view."""
        yield running_view(run, runner.snapshot()["progress"] or Progress())[:-2] + (runs_choices(run.name), run.name)
        while runner.active == run:
            snap = runner.snapshot()
            if snap["progress"] is not None:
                yield running_view(run, snap["progress"])
            time.sleep(POLL_S)
        yield finished_view(run)

    def message(text: str):
        return (status_html(text, error=True),) + (gr.skip(),) * 6

    def on_generate(prompt, seed, guidance_name, preset, coarse_steps, refine_steps):
        try:
            settings = check_settings({"prompt": prompt, "seed": seed, "guidance": guidance_name, "preset": preset,
                                       "coarse_steps": coarse_steps, "refine_steps": refine_steps}, presets)
        except MeshdreamError as e:
            yield message(str(e))
            return
        while runner.busy():  # a run started by a page that was closed or reloaded: this one is next
            yield (status_html("Waiting for the run in progress to finish…"),) + (gr.skip(),) * 6
            time.sleep(POLL_S)
        try:
            run = runner.start(settings)
        except MeshdreamError as e:
            yield message(str(e))
            return
        yield from follow(run)

    def on_resume(name):
        try:
            if not name:
                raise UserInputError("pick a cancelled or failed run in the list to resume")
            run = runner.folder(name)
            info = runner.info(run)
            if info.get("status") == "done":
                raise UserInputError(f"{name} is finished; there is nothing to resume")
            if runner.active == run:
                raise UserInputError(f"{name} is running")
            from .runs import Settings

            settings = Settings(**info["settings"])
            run = runner.start(settings, resume=run)
        except MeshdreamError as e:
            yield message(str(e))
            return
        yield from follow(run)

    def on_open(name):
        try:
            if not name:
                raise UserInputError("pick a run in the list to open")
            run = runner.folder(name)
        except MeshdreamError as e:
            yield message(str(e))
            return
        if runner.active == run:
            yield from follow(run)
        else:
            yield finished_view(run)

    def on_cancel():
        if runner.cancel():
            return status_html("Cancelling after the current step (its checkpoint is kept)…")
        return status_html("No run is in progress.", error=True)

    def on_load():
        run = runner.active
        if run is not None:
            yield from follow(run)
        else:
            yield (gr.skip(),) * 5 + (runs_choices(), gr.skip())

    with gr.Blocks(title="meshdream", analytics_enabled=False) as page:
        gr.Markdown("## meshdream\nType a prompt, watch the object take shape (coarse NeRF, then mesh and texture), "
                    "turn it in the viewer, download it.")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="Prompt", placeholder=examples[0] if examples else "a red cube", elem_id="md-prompt")
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[prompt], label="Prompts the guidance model knows")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=SEED_MAX, elem_id="md-seed",
                                     info="Another seed, another object for the same prompt")
                    preset = gr.Dropdown(label="Preset", choices=["none", *presets], value="none", elem_id="md-preset")
                guidance_box = gr.Textbox(label="Guidance model", value=guidance, elem_id="md-guidance",
                                          info="'embedded' (offline, CPU), 'stable-diffusion', 'deepfloyd-if', a hub id or a folder")
                with gr.Row():
                    coarse_steps = gr.Number(label="Coarse steps", value=_default_steps(CoarseConfig, runner.coarse_config),
                                             precision=0, elem_id="md-coarse-steps")
                    refine_steps = gr.Number(label="Refine steps", value=_default_steps(RefineConfig, runner.refine_config),
                                             precision=0, elem_id="md-refine-steps")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="md-generate")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="md-cancel")
                gr.Markdown("### Runs made here")
                runs_list = gr.Dropdown(label="Earlier runs", choices=runner.listing(), value=None, elem_id="md-runs")
                with gr.Row():
                    open_btn = gr.Button("Open", elem_id="md-open")
                    resume_btn = gr.Button("Resume", elem_id="md-resume")
            with gr.Column(scale=3, min_width=420):
                status = gr.HTML(status_html("Ready."), elem_id="md-status")
                progress = gr.HTML(progress_html(None, "idle"))
                preview = gr.Image(label="Latest preview", type="filepath", interactive=False, height=140, elem_id="md-preview")
                viewer = gr.Model3D(label="3D view (drag to turn)", clear_color=(0.93, 0.945, 0.957, 1.0), height=420,
                                    interactive=False, elem_id="md-viewer")
                with gr.Row():
                    turntable = gr.Image(label="Turntable", type="filepath", interactive=False, height=180, elem_id="md-turntable")
                    downloads = gr.File(label="Downloads: GLB, OBJ, STL, the run folder (zip)", file_count="multiple",
                                        interactive=False, elem_id="md-downloads")
        current = gr.State(None)  # the folder name of the run this page shows
        outputs = [status, progress, preview, turntable, downloads, runs_list, current]
        # the run events share one queue slot: one run on the machine at a time, waiting pages see their position
        inputs = [prompt, seed, guidance_box, preset, coarse_steps, refine_steps]
        show = dict(fn=viewer_of, inputs=[current], outputs=[viewer], concurrency_limit=None, show_progress="hidden")
        generate_btn.click(on_generate, inputs, outputs, concurrency_limit=1, concurrency_id="run").then(**show)
        prompt.submit(on_generate, inputs, outputs, concurrency_limit=1, concurrency_id="run").then(**show)
        resume_btn.click(on_resume, [runs_list], outputs, concurrency_limit=1, concurrency_id="run").then(**show)
        cancel_btn.click(on_cancel, None, [status], concurrency_limit=None, show_progress="hidden")
        open_btn.click(on_open, [runs_list], outputs, concurrency_limit=None).then(**show)
        page.load(on_load, None, outputs, concurrency_limit=None, show_progress="hidden").then(**show)
    return page


def theme():
    """Gradio's default look with the system's fonts (nothing fetched from a font service)."""
    import gradio as gr

    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(runs: str | os.PathLike = "meshdream-runs", *, host: str = "127.0.0.1", port: int = 7860, guidance: Optional[str] = None,
          coarse_config=None, refine_config=None, device: Optional[str] = None, block: bool = True):
    """Start ``meshdream app`` on http://HOST:PORT/ with runs under ``runs``. Returns the gradio page
    (with ``block=False`` the server runs in a background thread)."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise MeshdreamError("`meshdream app` needs Gradio: pip install 'meshdream[app]'") from None
    import diffusers  # noqa: F401  (torch, diffusers, transformers: loaded once, before the first run, not during it)
    import transformers  # noqa: F401

    import meshdream.stages.generate  # noqa: F401
    from ..mesh.cleanup import prepare_on_this_thread

    prepare_on_this_thread()  # pymeshlab must first run on the main thread; runs use a worker thread
    from diffusers import DDPMScheduler, UNet2DConditionModel  # noqa: F401  (diffusers imports these lazily)
    from transformers import CLIPTextModel  # noqa: F401

    runner = Runner(runs, coarse_config=coarse_config, refine_config=refine_config, device=device)
    page = build(runner, guidance)
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=host, server_port=port, allowed_paths=[str(runner.runs)], ssr_mode=False, theme=theme(), css=CSS,
                show_error=False, quiet=True, prevent_thread_lock=not block, footer_links=[])
    page.runner = runner
    return page
