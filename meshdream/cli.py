"""The ``meshdream`` command line: coarse, refine, export, generate, batch, render, app.

Each command is a thin wrapper over the Python function of the same name; user errors become click
usage errors (exit code 2) and other meshdream errors clean messages (exit code 1), never tracebacks.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys

import click

from . import __version__
from .asset.formats import WRITERS
from .config import ITERS_MAX, SEED_MAX, preset_names
from .errors import MeshdreamError, Terminated, UserInputError
from .render.video import DEFAULT_VIEWS, MP4_FPS, RENDER_FORMATS

DEVICES = click.Choice(["cpu", "cuda"])
EXPORT_FORMATS = tuple(WRITERS)  # the asset writers' table is the one list of formats


def _stage(module: str, name: str):
    """Import stage function ``module.name`` lazily (torch and diffusers load only when needed)."""
    try:
        mod = importlib.import_module(f"meshdream.stages.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"meshdream.stages.{module}":
            raise click.ClickException(f"`meshdream {name}` is not available in this build") from None
        raise
    return getattr(mod, name)


def _user_errors(fn):
    """Map meshdream errors to click errors so the user sees a message, not a traceback; SIGTERM stops a command
    like Ctrl-C (with what it kept), and warnings are plain messages, each once."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with _terminate_as_interrupt(), _plain_warnings():
                return fn(*args, **kwargs)
        except UserInputError as e:
            raise click.UsageError(str(e)) from None
        except MeshdreamError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt as e:  # the stage loop says what it left (it never claims a checkpoint that is not there)
            terminated = isinstance(e, Terminated)
            click.echo(f"\n{e or ('terminated' if terminated else 'interrupted')}", err=True)
            sys.exit(143 if terminated else 130)

    return wrapper


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises Terminated (a KeyboardInterrupt) while a command runs, so it unwinds like Ctrl-C: atomic writes
    drop their temporaries and the stage says which checkpoint is kept. Main thread only (where signals arrive)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _plain_warnings():
    """Warnings as one plain line each ("Warning: ..."), each text once per command: `generate` encodes the prompt
    in coarse and in refine, and Python's own form shows the source line that warned."""
    import warnings

    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text not in seen:
            seen.add(text)
            click.echo(f"Warning: {text}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _check_device(device: str | None) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("'cuda' was asked for but no CUDA device is available; use --device cpu", param_hint="--device")


def _check_prompt(prompt: str, *stage_configs: type) -> None:
    if not prompt.strip():
        raise click.BadParameter("the prompt is empty; describe the object, e.g. \"a red cube\"", param_hint="PROMPT")
    from .config import split_override

    kv = split_override(prompt)
    if kv is not None:  # e.g. threestudio's system.prompt_processor.prompt="a red cube"
        from .config import config_keys

        key = kv[0]
        known = any(key in config_keys(cls) or key.split(".")[0] in config_keys(cls) for cls in stage_configs)
        what = f"the setting {key}" if known else f"a KEY=VALUE setting ({key!r} is not a meshdream config key)"
        raise click.BadParameter(
            f"{prompt!r} looks like {what}, not a prompt. Give the prompt first, quoted, then the options, then "
            f"settings: meshdream generate \"a red cube\" --out RUN iters=100. A prompt with '=' in it needs a space "
            f"before the '=' (\"a = b\").", param_hint="PROMPT")


def _config_classes(*stages: str) -> list[type]:
    return [getattr(importlib.import_module(f"meshdream.stages.{s}"), f"{s.capitalize()}Config") for s in stages]


guidance_option = click.option(
    "--guidance",
    metavar="NAME|PATH",
    default=None,
    help="Guidance model: 'embedded' (default, offline, CPU), 'stable-diffusion', 'deepfloyd-if', a hub id or a local diffusers folder.",
)
device_option = click.option("--device", type=DEVICES, default=None, help="Where to run (default: cuda if available, else cpu).")
seed_option = click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None, help="Random seed (default from the config).")
resume_option = click.option("--resume", is_flag=True, help="Continue from the stage's last checkpoint in RUN.")
config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None,
    help="YAML file overriding the stage's defaults and the preset (it may say `extends: PRESET`).",
)
preset_option = click.option(
    "--preset", type=click.Choice(preset_names()), default=None,
    help="Named settings shipped with meshdream: 'sd' (Stable Diffusion, CUDA), 'if' (DeepFloyd IF coarse + SD refine, CUDA).",
)
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
negative_prompt_option = click.option("--negative-prompt", default=None, help="What the images should not look like.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")
format_option = click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="glb", show_default=True,
                             help="Asset file format.")

SETTINGS_HELP = ("KEY=VALUE settings after the options override any config key, dotted for nested ones "
                 "(iters=100 guidance.guidance_scale=50 nerf.hash_grid.levels=8); they are recorded in RUN's config.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshdream", help="Show the version and exit.")
def cli() -> None:
    """Text to textured 3D asset by score distillation (coarse NeRF, then mesh refinement).

    \b
    meshdream generate "a red cube" --out runs/red_cube       # GLB + turntables in runs/red_cube
    meshdream generate "a blue sphere" --out runs/s iters=200 # KEY=VALUE settings after the options
    meshdream render runs/red_cube --format png               # lit and normals views of an asset
    """


@cli.command(epilog=SETTINGS_HELP)
@click.argument("prompt")
@overrides_argument
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="RUN folder to write.")
@preset_option
@config_option
@guidance_option
@click.option("--iters", type=click.IntRange(1, ITERS_MAX), default=None, help="Optimisation steps.")
@seed_option
@device_option
@resume_option
@negative_prompt_option
@quiet_option
@_user_errors
def coarse(prompt, overrides, out, preset, config, guidance, iters, seed, device, resume, negative_prompt, quiet):
    """Optimise a NeRF for PROMPT by SDS and extract its mesh into RUN/coarse."""
    _check_prompt(prompt, *_config_classes("coarse"))
    _check_device(device)
    from .engine.run import removed_on_usage_error

    fn = _stage("coarse", "coarse")
    with removed_on_usage_error(out, os.path.join(out, "coarse")):
        mesh = fn(prompt, out, config=config, guidance=guidance, iters=iters, seed=seed, device=device, resume=resume,
                  negative_prompt=negative_prompt, progress=not quiet, preset=preset, overrides=overrides)
    click.echo(f"coarse mesh: {mesh}")


@cli.command(epilog=SETTINGS_HELP)
@click.argument("run", type=click.Path(file_okay=False))
@overrides_argument
@preset_option
@config_option
@guidance_option
@click.option("--iters", type=click.IntRange(1, ITERS_MAX), default=None, help="Optimisation steps.")
@click.option("--texture-size", type=click.IntRange(min=16, max=8192), default=None, help="UV texture resolution (pixels).")
@seed_option
@device_option
@resume_option
@click.option("--negative-prompt", default=None, help="What the images should not look like (default: the coarse stage's).")
@quiet_option
@_user_errors
def refine(run, overrides, preset, config, guidance, iters, texture_size, seed, device, resume, negative_prompt, quiet):
    """Refine RUN's coarse mesh and its UV texture by SDS through differentiable rasterisation."""
    _check_device(device)
    from .engine.run import removed_on_usage_error

    fn = _stage("refine", "refine")
    with removed_on_usage_error(os.path.join(run, "refine")):
        mesh = fn(run, config=config, guidance=guidance, iters=iters, texture_size=texture_size, seed=seed, device=device,
                  resume=resume, progress=not quiet, negative_prompt=negative_prompt, preset=preset, overrides=overrides)
    click.echo(f"refined mesh: {mesh}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=None,
              help="Asset file format (default: --output's extension, else glb); it must agree with --output's extension.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="File to write (default RUN/export/model.FORMAT); never inside RUN's coarse/ or refine/ folders.")
@click.option("--faces", type=click.IntRange(min=4), default=None, help="Decimate to about this many faces.")
@click.option("--texture-size", type=click.IntRange(min=16, max=8192), default=None, help="Resample the texture to this size.")
@click.option("--normal-map", is_flag=True,
              help="With --faces: bake the refined mesh's normals into a normal map of the decimated mesh (GLB, glTF).")
@click.option("--size-mm", type=float, default=None, metavar="MM",
              help="STL / 3MF: length of the print's longest side in millimetres (default 50).")
@_user_errors
def export(run, fmt, output, faces, texture_size, normal_map, size_mm):
    """Export RUN's textured mesh as GLB / glTF / OBJ (+MTL, PNG) / PLY (vertex colours), or for 3D printing as
    STL / 3MF (one closed solid, millimetres, +Z up)."""
    from .engine.run import removed_on_usage_error

    fn = _stage("export", "export")
    with removed_on_usage_error(os.path.dirname(os.path.abspath(output)) if output else os.path.join(run, "export")):
        path = fn(run, format=fmt, output=output, faces=faces, texture_size=texture_size, normal_map=normal_map, size_mm=size_mm)
    click.echo(f"exported: {path}")


@cli.command(epilog=SETTINGS_HELP + " A plain key goes to every stage that has it; coarse.KEY=VALUE or "
             "refine.KEY=VALUE to one stage.")
@click.argument("prompt")
@overrides_argument
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="RUN folder to write.")
@preset_option
@guidance_option
@click.option("--coarse-config", type=click.Path(dir_okay=False), default=None, help="YAML for the coarse stage.")
@click.option("--refine-config", type=click.Path(dir_okay=False), default=None, help="YAML for the refine stage.")
@click.option("--coarse-iters", type=click.IntRange(1, ITERS_MAX), default=None, help="Coarse (NeRF) optimisation steps.")
@click.option("--refine-iters", type=click.IntRange(1, ITERS_MAX), default=None, help="Refine (mesh) optimisation steps.")
@click.option("--texture-size", type=click.IntRange(min=16, max=8192), default=None, help="UV texture resolution (pixels).")
@click.option("--faces", type=click.IntRange(min=4), default=None, help="Decimate the exported mesh to about this many faces.")
@format_option
@seed_option
@device_option
@click.option("--resume", is_flag=True, help="Keep finished stages and continue an interrupted one from its checkpoint.")
@negative_prompt_option
@click.option("--no-video", is_flag=True, help="Skip RUN/turntable.mp4 (the GIF is still written).")
@quiet_option
@_user_errors
def generate(prompt, overrides, out, preset, guidance, coarse_config, refine_config, coarse_iters, refine_iters, texture_size,
             faces, fmt, seed, device, resume, negative_prompt, no_video, quiet):
    """Run coarse, refine and export for PROMPT; also saves turntables (GIF, MP4) in RUN."""
    _check_prompt(prompt, *_config_classes("coarse", "refine"))
    _check_device(device)
    from .engine.run import removed_on_usage_error

    fn = _stage("generate", "generate")
    with removed_on_usage_error(out, os.path.join(out, "coarse")):  # a refused start leaves no RUN behind
        path = fn(prompt, out, guidance=guidance, coarse_config=coarse_config, refine_config=refine_config,
              coarse_iters=coarse_iters, refine_iters=refine_iters, format=fmt, seed=seed, device=device,
              resume=resume, negative_prompt=negative_prompt, progress=not quiet, preset=preset, overrides=overrides,
              texture_size=texture_size, faces=faces, video=not no_video)
    click.echo(f"asset: {path}")


@cli.command()
@click.argument("prompts", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Batch folder: DIR/<slug>/ RUNs, index.json, index.html.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Jobs at once (default: CPUs // --cpus-per-job, and GPUs // --gpus-per-job).")
@click.option("--address", default=None, metavar="ADDR", help="Join a running Ray cluster: 'auto' or 'ray://host:port' (default: a local Ray for this call).")
@click.option("--gpus-per-job", type=click.FloatRange(min=0), default=0.0, show_default=True, help="GPUs per prompt (fractions share a GPU); > 0 runs jobs on CUDA.")
@click.option("--cpus-per-job", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="CPUs per prompt (also its torch threads).")
@click.option("--resume", is_flag=True, help="Continue DIR's batch: finished prompts are kept, the others resume from their checkpoints.")
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True, help="Retries of a failed prompt before it is reported.")
@guidance_option
@click.option("--coarse-config", type=click.Path(dir_okay=False), default=None, help="YAML for every prompt's coarse stage.")
@click.option("--refine-config", type=click.Path(dir_okay=False), default=None, help="YAML for every prompt's refine stage.")
@click.option("--coarse-iters", type=click.IntRange(1, ITERS_MAX), default=None, help="Coarse (NeRF) optimisation steps.")
@click.option("--refine-iters", type=click.IntRange(1, ITERS_MAX), default=None, help="Refine (mesh) optimisation steps.")
@format_option
@seed_option
@click.option("--no-video", is_flag=True, help="Skip each RUN's turntable.mp4 (the GIF is still written).")
@quiet_option
@_user_errors
def batch(prompts, out, workers, address, gpus_per_job, cpus_per_job, resume, retries, guidance, coarse_config, refine_config,
          coarse_iters, refine_iters, fmt, seed, no_video, quiet):
    """Generate one asset per line of PROMPTS (.txt, or .yaml/.jsonl with per-prompt overrides) on Ray.

    Writes DIR/<slug>/ (a RUN folder per prompt), DIR/index.json and a gallery DIR/index.html."""
    from .batching.runner import batch as run_batch

    index = run_batch(prompts, out, workers=workers, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                      resume=resume, retries=retries, guidance=guidance, coarse_config=coarse_config,
                      refine_config=refine_config, coarse_iters=coarse_iters, refine_iters=refine_iters, seed=seed,
                      format=fmt, video=not no_video, progress=not quiet)
    failed = [e for e in index["jobs"] if e["status"] != "done"]
    click.echo(f"gallery: {click.format_filename(str(out))}/index.html ({len(index['jobs']) - len(failed)} of {len(index['jobs'])} done)")
    if failed:
        lines = "\n".join(f"  {e['slug']}: {e['error'] or e['status']}" for e in failed)
        raise click.ClickException(f"{len(failed)} prompt(s) failed (details in index.json); fix them and rerun with --resume:\n{lines}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--views", type=click.IntRange(min=1, max=720), default=None,
              help=f"Frames of one turn (default: {DEFAULT_VIEWS['mp4']} for mp4, a {DEFAULT_VIEWS['mp4'] / MP4_FPS:g} s turn; "
                   f"{DEFAULT_VIEWS['gif']} for gif; {DEFAULT_VIEWS['png']} for png).")
@click.option("--size", type=click.IntRange(min=16, max=4096), default=512, show_default=True, help="Height of each view (pixels).")
@click.option("--format", "fmt", type=click.Choice(RENDER_FORMATS), default=None,
              help="mp4 (H.264) or gif: a turntable; png: one sheet of the views (default: --output's extension, else mp4).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="File to write (default RUN/render.FORMAT); never inside RUN's coarse/ or refine/ folders.")
@_user_errors
def render(run, views, size, fmt, output):
    """Render RUN's asset turning: a lit view beside a normals view."""
    from .stages.render import render_run

    path = render_run(run, views=views, size=size, format=fmt, output=output)
    click.echo(f"rendered: {path}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to serve on.")
@click.option("--runs", type=click.Path(file_okay=False), default="meshdream-runs", show_default=True,
              help="Folder for the app's RUN folders (the list of earlier runs reads it).")
@guidance_option
@click.option("--coarse-config", type=click.Path(dir_okay=False), default=None, help="YAML for every run's coarse stage.")
@click.option("--refine-config", type=click.Path(dir_okay=False), default=None, help="YAML for every run's refine stage.")
@device_option
@_user_errors
def app(host, port, runs, guidance, coarse_config, refine_config, device):
    """A local web page: type a prompt, watch it take shape, turn it in a 3D viewer, download GLB / OBJ / STL.

    Needs the app extra: pip install 'meshdream[app]'. Stop it with Ctrl+C."""
    _check_device(device)
    from .app.page import serve

    click.echo(f"meshdream app on http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/ (runs in {runs}/)")
    serve(runs, host=host, port=port, guidance=guidance, coarse_config=coarse_config, refine_config=refine_config, device=device)


def main() -> None:
    cli(prog_name="meshdream")


if __name__ == "__main__":
    main()
