"""The ``meshdream`` command line: coarse, refine, export, generate, batch.

Each command is a thin wrapper over the Python function of the same name; user errors become click
usage errors (exit code 2) and other meshdream errors clean messages (exit code 1), never tracebacks.
"""
from __future__ import annotations

import functools
import importlib
import sys

import click

from . import __version__
from .asset import WRITERS
from .config import SEED_MAX
from .errors import MeshdreamError, UserInputError

DEVICES = click.Choice(["cpu", "cuda"])
EXPORT_FORMATS = tuple(WRITERS)  # the asset writers' table is the one list of formats


def _stage(module: str, name: str):
    """Import stage function ``module.name`` lazily (torch and diffusers load only when needed)."""
    try:
        mod = importlib.import_module(f"meshdream.pipeline.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"meshdream.pipeline.{module}":
            raise click.ClickException(f"`meshdream {name}` is not available in this build") from None
        raise
    return getattr(mod, name)


def _user_errors(fn):
    """Map meshdream errors to click errors so the user sees a message, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserInputError as e:
            raise click.UsageError(str(e)) from None
        except MeshdreamError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt as e:  # the stage loop says what it left (it never claims a checkpoint that is not there)
            click.echo(f"\n{e or 'interrupted'}", err=True)
            sys.exit(130)

    return wrapper


def _check_device(device: str | None) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("'cuda' was asked for but no CUDA device is available; use --device cpu", param_hint="--device")


def _check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise click.BadParameter("the prompt is empty; describe the object, e.g. \"a red cube\"", param_hint="PROMPT")


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
    "--config", "config", type=click.Path(dir_okay=False), default=None, help="YAML file overriding the stage's defaults (see configs/)."
)
quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshdream")
def cli() -> None:
    """Text to textured 3D asset by score distillation (coarse NeRF, then mesh refinement)."""


@cli.command()
@click.argument("prompt")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="RUN folder to write.")
@config_option
@guidance_option
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Optimisation steps.")
@seed_option
@device_option
@resume_option
@click.option("--negative-prompt", default=None, help="What the images should not look like.")
@quiet_option
@_user_errors
def coarse(prompt, out, config, guidance, iters, seed, device, resume, negative_prompt, quiet):
    """Optimise a NeRF for PROMPT by SDS and extract its mesh into RUN/coarse."""
    _check_prompt(prompt)
    _check_device(device)
    fn = _stage("coarse", "coarse")
    mesh = fn(prompt, out, config=config, guidance=guidance, iters=iters, seed=seed, device=device,
              resume=resume, negative_prompt=negative_prompt, progress=not quiet)
    click.echo(f"coarse mesh: {mesh}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@config_option
@guidance_option
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Optimisation steps.")
@click.option("--texture-size", type=click.IntRange(min=16, max=8192), default=None, help="UV texture resolution (pixels).")
@seed_option
@device_option
@resume_option
@quiet_option
@_user_errors
def refine(run, config, guidance, iters, texture_size, seed, device, resume, quiet):
    """Refine RUN's coarse mesh and its UV texture by SDS through differentiable rasterisation."""
    _check_device(device)
    fn = _stage("refine", "refine")
    mesh = fn(run, config=config, guidance=guidance, iters=iters, texture_size=texture_size, seed=seed,
              device=device, resume=resume, progress=not quiet)
    click.echo(f"refined mesh: {mesh}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="glb", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="File to write (default RUN/export/model.FORMAT).")
@click.option("--faces", type=click.IntRange(min=4), default=None, help="Decimate to about this many faces.")
@click.option("--texture-size", type=click.IntRange(min=16, max=8192), default=None, help="Resample the texture to this size.")
@_user_errors
def export(run, fmt, output, faces, texture_size):
    """Export RUN's textured mesh as GLB / glTF / OBJ (+MTL, PNG) / PLY (vertex colours)."""
    fn = _stage("export", "export")
    path = fn(run, format=fmt, output=output, faces=faces, texture_size=texture_size)
    click.echo(f"exported: {path}")


@cli.command()
@click.argument("prompt")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="RUN folder to write.")
@guidance_option
@click.option("--coarse-config", type=click.Path(dir_okay=False), default=None, help="YAML for the coarse stage.")
@click.option("--refine-config", type=click.Path(dir_okay=False), default=None, help="YAML for the refine stage.")
@click.option("--coarse-iters", type=click.IntRange(min=1), default=None)
@click.option("--refine-iters", type=click.IntRange(min=1), default=None)
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="glb", show_default=True)
@seed_option
@device_option
@resume_option
@click.option("--negative-prompt", default=None)
@quiet_option
@_user_errors
def generate(prompt, out, guidance, coarse_config, refine_config, coarse_iters, refine_iters, fmt, seed, device, resume,
             negative_prompt, quiet):
    """Run coarse, refine and export for PROMPT; also saves a turntable GIF in RUN."""
    _check_prompt(prompt)
    _check_device(device)
    fn = _stage("generate", "generate")
    path = fn(prompt, out, guidance=guidance, coarse_config=coarse_config, refine_config=refine_config,
              coarse_iters=coarse_iters, refine_iters=refine_iters, format=fmt, seed=seed, device=device,
              resume=resume, negative_prompt=negative_prompt, progress=not quiet)
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
@click.option("--coarse-iters", type=click.IntRange(min=1), default=None)
@click.option("--refine-iters", type=click.IntRange(min=1), default=None)
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="glb", show_default=True)
@seed_option
@quiet_option
@_user_errors
def batch(prompts, out, workers, address, gpus_per_job, cpus_per_job, resume, retries, guidance, coarse_config, refine_config,
          coarse_iters, refine_iters, fmt, seed, quiet):
    """Generate one asset per line of PROMPTS (.txt, or .yaml/.jsonl with per-prompt overrides) on Ray.

    Writes DIR/<slug>/ (a RUN folder per prompt), DIR/index.json and a gallery DIR/index.html."""
    from .ray_batch import batch as run_batch

    index = run_batch(prompts, out, workers=workers, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                      resume=resume, retries=retries, guidance=guidance, coarse_config=coarse_config,
                      refine_config=refine_config, coarse_iters=coarse_iters, refine_iters=refine_iters, seed=seed,
                      format=fmt, progress=not quiet)
    failed = [e for e in index["jobs"] if e["status"] != "done"]
    click.echo(f"gallery: {click.format_filename(str(out))}/index.html ({len(index['jobs']) - len(failed)} of {len(index['jobs'])} done)")
    if failed:
        lines = "\n".join(f"  {e['slug']}: {e['error'] or e['status']}" for e in failed)
        raise click.ClickException(f"{len(failed)} prompt(s) failed (details in index.json); fix them and rerun with --resume:\n{lines}")


def main() -> None:
    cli(prog_name="meshdream")


if __name__ == "__main__":
    main()
