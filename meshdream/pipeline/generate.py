"""The whole pipeline: coarse -> refine -> export, plus a turntable GIF of the result."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..guidance.base import check_prompt
from ..run import RunDir, locks_run
from .coarse import coarse
from .export import export
from .refine import refine


def _open_run(prompt, out, **_) -> RunDir:
    check_prompt(prompt)
    return RunDir.create(out)  # an unwritable folder fails here, before any work


@locks_run("generate", _open_run)
def generate(prompt: str, out: str | os.PathLike, *, guidance: str | None = None, coarse_config=None, refine_config=None,
             coarse_iters: int | None = None, refine_iters: int | None = None, format: str = "glb", seed: int | None = None,
             device: str | None = None, resume: bool = False, negative_prompt: str | None = None, progress: bool = True,
             timings: dict[str, float] | None = None) -> Path:
    """Text -> textured asset. Returns the exported file (RUN/export/model.FORMAT); RUN/turntable.gif beside it.

    With ``resume``, finished stages are kept and an interrupted one continues from its checkpoint.
    ``timings``, when given, receives the wall seconds of each step: coarse, refine, export, turntable."""
    from ..turntable import turntable_of_run

    prompt = check_prompt(prompt)
    run = RunDir.create(out)  # an unwritable folder fails here, before any work
    timings = {} if timings is None else timings
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    coarse(prompt, run.root, config=coarse_config, guidance=guidance, iters=coarse_iters, seed=seed, device=device,
           resume=resume and run.checkpoint("coarse").is_file(), negative_prompt=negative_prompt, progress=progress)
    lap("coarse")
    refine(run.root, config=refine_config, guidance=guidance, iters=refine_iters, seed=seed, device=device,
           resume=resume and run.checkpoint("refine").is_file(), progress=progress)
    lap("refine")
    path = export(run.root, format=format)
    lap("export")
    turntable_of_run(run)
    lap("turntable")
    return path
