"""The whole pipeline: coarse -> refine -> export, plus a turntable GIF of the result."""
from __future__ import annotations

import os
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
             device: str | None = None, resume: bool = False, negative_prompt: str | None = None, progress: bool = True) -> Path:
    """Text -> textured asset. Returns the exported file (RUN/export/model.FORMAT); RUN/turntable.gif beside it.

    With ``resume``, finished stages are kept and an interrupted one continues from its checkpoint."""
    from ..turntable import turntable_of_run

    prompt = check_prompt(prompt)
    run = RunDir.create(out)  # an unwritable folder fails here, before any work
    coarse(prompt, run.root, config=coarse_config, guidance=guidance, iters=coarse_iters, seed=seed, device=device,
           resume=resume and (run.coarse / "checkpoint.pt").is_file(), negative_prompt=negative_prompt, progress=progress)
    refine(run.root, config=refine_config, guidance=guidance, iters=refine_iters, seed=seed, device=device,
           resume=resume and (run.refine / "checkpoint.pt").is_file(), progress=progress)
    path = export(run.root, format=format)
    turntable_of_run(run)
    return path
