"""The whole pipeline: coarse -> refine -> export, plus turntables (GIF and MP4) of the result."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..asset.formats import FORMATS
from ..config import build_config, route_overrides
from ..errors import UserInputError
from ..guidance.base import check_prompt
from ..engine.run import RunDir, locks_run, removed_on_usage_error
from .coarse import CoarseConfig, coarse
from .export import export
from .refine import RefineConfig, refine


def _open_run(prompt, out, **_) -> RunDir:
    check_prompt(prompt)
    return RunDir.create(out)  # an unwritable folder fails here, before any work


@locks_run("generate", _open_run)
def generate(prompt: str, out: str | os.PathLike, *, guidance: str | None = None, coarse_config=None, refine_config=None,
             coarse_iters: int | None = None, refine_iters: int | None = None, format: str = "glb", seed: int | None = None,
             device: str | None = None, resume: bool = False, negative_prompt: str | None = None, progress: bool = True,
             preset: str | None = None, overrides=None, texture_size: int | None = None, faces: int | None = None,
             video: bool = True, timings: dict[str, float] | None = None) -> Path:
    """Text -> textured asset. Returns the exported file (RUN/export/model.FORMAT); RUN/turntable.gif and
    RUN/turntable.mp4 (``video``) beside it.

    ``preset`` names a packaged preset for both stages; ``overrides`` (``["key=value", ...]``) go to every stage
    whose config has the key, ``coarse.key=value`` / ``refine.key=value`` to one. ``texture_size`` is the refine
    stage's texture resolution, ``faces`` decimates the exported mesh. With ``resume``, finished stages are
    kept and an interrupted one continues from its checkpoint.
    ``timings``, when given, receives the wall seconds of each step: coarse, refine, export, turntable."""
    from .render import turntable_of_run

    prompt = check_prompt(prompt)
    if format not in FORMATS:
        raise UserInputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if faces is not None and faces < 4:
        raise UserInputError(f"--faces {faces} is too small; a closed mesh needs at least 4 faces")
    routed = route_overrides(overrides, {"coarse": CoarseConfig, "refine": RefineConfig})
    # on --resume, KEY=VALUE settings without a config file or preset go to the stages as they are: a resumed stage
    # applies them to its checkpoint's saved config (config.resume_settings), a fresh one to the defaults
    stage_settings = {"coarse": None, "refine": None}
    if resume and coarse_config is None and preset is None:
        stage_settings["coarse"] = routed["coarse"]
    else:
        coarse_config = build_config(CoarseConfig, coarse_config, preset, routed["coarse"]) or coarse_config
    if resume and refine_config is None and preset is None:
        stage_settings["refine"] = routed["refine"]
    else:
        refine_config = build_config(RefineConfig, refine_config, preset, routed["refine"]) or refine_config
    run = RunDir.create(out)  # an unwritable folder fails here, before any work
    timings = {} if timings is None else timings
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    with removed_on_usage_error(run.coarse):
        coarse(prompt, run.root, config=coarse_config, guidance=guidance, iters=coarse_iters, seed=seed, device=device,
               resume=resume and run.checkpoint("coarse").is_file(), negative_prompt=negative_prompt, progress=progress,
               overrides=stage_settings["coarse"])
    lap("coarse")
    with removed_on_usage_error(run.refine):  # the finished coarse stage stays (continue with `meshdream refine RUN`)
        refine(run.root, config=refine_config, guidance=guidance, iters=refine_iters, seed=seed, device=device,
               texture_size=texture_size, resume=resume and run.checkpoint("refine").is_file(), progress=progress,
               overrides=stage_settings["refine"])
    lap("refine")
    path = export(run.root, format=format, faces=faces)
    lap("export")
    turntable_of_run(run, video=video)
    lap("turntable")
    return path
