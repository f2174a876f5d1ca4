"""One optimisation loop for every stage (coarse, refine): config and resume, seeding, the stage
folder, atomic checkpoints, previews, the progress bar and step hooks.

A stage supplies what differs (its parameters, one step's loss, its preview render and its final
outputs); this module owns what must not differ between stages, so a resumed coarse run and a
resumed refine run follow one rule:

    start = start_stage("coarse", run.coarse, CoarseConfig, config, overrides, resume)   # cfg + saved state
    g = seeded_generator(start.cfg.seed)                  # every random draw of the loop comes from g
    loop = StageLoop("coarse", run.coarse, start.cfg, g, state=lambda: {...}, progress=progress)
    loop.run(first_step, compute_loss, optimizer, preview)   # periodic checkpoints + previews, final preview
    ... write the stage's outputs ...
    loop.finish()                                         # the final checkpoint, marked done

Resume rule (:mod:`meshdream.engine.resume`): a resumed stage runs with the config saved in its checkpoint;
settings given again are applied where that is safe (iters, learning rates, loss weights, guidance
strength, cadence, extraction) and otherwise refused with a message listing them.

Step hooks (:func:`step_hook`) are called after every finished step, after its checkpoint and
preview; an exception raised by a hook stops the run there like a crash would (tests use this to
"kill" a run at a chosen step). A hook that raises :class:`StopRun` asks for a clean stop instead:
the loop first checkpoints the finished step, so ``--resume`` continues from exactly there (the web
app's cancel button).
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple, Type, TypeVar

import torch

from ..atomic_files import remove_stale_temporaries
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..config import save_config, stage_config, to_dict
from ..errors import CheckpointError, MeshdreamError, NonFiniteStepError, Terminated, UserInputError
from .run import CHECKPOINT_FILE, CONFIG_FILE, PREVIEWS_FOLDER

T = TypeVar("T")



# ----------------------------------------------------------------------------------------- config

@dataclass
class StageStart:
    """How a stage starts: the config it runs with and, when resuming, the checkpoint it continues."""

    cfg: Any
    saved: Optional[dict]  # the checkpoint's contents (None: a fresh start)

    @property
    def step(self) -> int:
        """The first step to run."""
        return 0 if self.saved is None else int(self.saved["step"])

    def finished(self, output: Path) -> bool:
        """True when a resumed stage already ran its ``cfg.iters`` steps and wrote ``output``."""
        return (self.saved is not None and bool(self.saved.get("done")) and output.is_file()
                and self.cfg.iters <= self.saved["step"])


# a checkpoint's plain entries that a resumed stage reads, and their types (each may also be absent or None)
ENTRY_TYPES = {"prompt": str, "negative_prompt": str, "done": bool}


def start_stage(name: str, folder: Path, cls: Type[T], config, overrides: Mapping[str, Any], resume: bool) -> StageStart:
    """The config and saved state a stage starts from.

    Fresh: ``cls`` defaults < ``config`` (YAML path or dataclass) < ``overrides``. Resumed: the config saved
    in ``folder/checkpoint.pt``; settings given again (``config``, ``overrides``) are applied where that is
    safe and refused otherwise (:func:`meshdream.engine.resume.resume_config`). ``overrides`` maps config keys to
    values (None: not given)."""
    from .resume import resume_config

    if not resume:
        return StageStart(stage_config(cls, config, overrides), None)
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        raise UserInputError(f"--resume: {str(path)!r} does not exist; start without --resume")
    saved = load_checkpoint(path, remedy=f"start the {name} stage over without --resume (that replaces it)")
    missing = [k for k in ("stage", "step", "config", "rng") if k not in saved]
    wrong = [k for k, kind in ENTRY_TYPES.items() if saved.get(k) is not None and not isinstance(saved[k], kind)]
    if (missing or wrong or saved["stage"] != name or not isinstance(saved["step"], int) or saved["step"] < 0
            or not isinstance(saved["config"], dict)):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a {name} checkpoint (missing or wrong: "
                              f"{', '.join(missing + wrong) or 'stage, step or config'}); start the {name} stage without --resume")
    cfg = resume_config(cls, saved["config"], config, overrides, f"the {name} checkpoint {str(path)!r}")
    if cfg.iters < saved["step"]:  # the result would be recorded with fewer steps than it was trained for
        raise UserInputError(f"--resume: the {name} checkpoint {str(path)!r} is at step {saved['step']}, so iters={cfg.iters} "
                             f"cannot apply (a resumed stage continues; it cannot undo steps). Give iters >= {saved['step']} "
                             f"(or leave iters out), or start the {name} stage over without --resume")
    return StageStart(cfg, saved)


@contextlib.contextmanager
def restoring(path: Path, name: str) -> Iterator[None]:
    """Loading a checkpoint's tensors into the stage's model: a mismatch (a checkpoint from another model
    layout, or a crafted one) is a CheckpointError, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this {name} stage ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); start the {name} stage "
                              "without --resume") from None


def prepare_folder(folder: Path) -> None:
    """Make the stage folder and its previews folder; drop half-written files a killed run left."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PREVIEWS_FOLDER).mkdir(exist_ok=True)
    remove_stale_temporaries(folder)


def seeded_generator(seed: int) -> torch.Generator:
    """Seed torch's global RNG (parameter initialisation) and return the generator the loop draws from."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ step pieces

def ramp(schedule: Tuple[float, float], progress: float) -> float:
    """Linear schedule from schedule[0] at progress 0 to schedule[1] at progress 1."""
    p = min(max(progress, 0.0), 1.0)
    return schedule[0] + (schedule[1] - schedule[0]) * p


def check_finite(loss: torch.Tensor, step: int, stage: str, advice: str = "") -> None:
    """Stop with a clear message instead of writing NaN parameters into the next checkpoint. ``advice``: what
    the user can do (the stage loop says whether a checkpoint exists and how to continue)."""
    if not torch.isfinite(loss).all():
        raise MeshdreamError(f"{stage}: the loss became {float(loss.detach())} at step {step}; the step was not applied. "
                             f"{advice or 'Try a lower learning rate or guidance scale'}")


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int, stage: str, advice: str = "") -> None:
    """Refuse a non-finite loss (before it reaches the parameters), then one optimiser step."""
    check_finite(loss, step, stage, advice)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True, leave=True)


# ------------------------------------------------------------------------------------- step hooks

StepHook = Callable[[str, int], None]  # (stage name, steps done)


class StopRun(Exception):
    """Raised by a step hook to stop a run cleanly: the stage loop checkpoints the finished step, then
    re-raises (the run folder resumes from that step)."""
_HOOKS: contextvars.ContextVar[Tuple[StepHook, ...]] = contextvars.ContextVar("meshdream_step_hooks", default=())


@contextlib.contextmanager
def step_hook(hook: StepHook) -> Iterator[None]:
    """Call ``hook(stage, steps_done)`` after every step of every stage run inside the ``with`` block
    (after that step's checkpoint and preview). An exception it raises ends the run at that point."""
    token = _HOOKS.set(_HOOKS.get() + (hook,))
    try:
        yield
    finally:
        _HOOKS.reset(token)


# ------------------------------------------------------------------------------------------- loop

class StageLoop:
    """Checkpoints, previews and the step loop of one stage.

    ``cfg`` needs ``iters``, ``checkpoint_every`` and ``preview_every``; ``state()`` returns the stage's
    own checkpoint entries (parameters, optimiser state ...), ``meta`` fixed entries (prompt, seed)."""

    def __init__(self, name: str, folder: Path, cfg, generator: torch.Generator, state: Callable[[], dict],
                 meta: Optional[dict] = None, progress: bool = True):
        self.name, self.folder, self.cfg, self.generator = name, Path(folder), cfg, generator
        self.state, self.meta, self.progress = state, dict(meta or {}), progress
        self.start = 0
        self.last_checkpoint: Optional[int] = None  # step of the newest checkpoint on disk (None: none yet)
        self.t0 = time.time()

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def preview_path(self, name: str) -> Path:
        return self.folder / PREVIEWS_FOLDER / name

    def restore(self, saved: Optional[dict]) -> int:
        """Continue the generator's draws from ``saved`` (a checkpoint); returns the first step to run."""
        if saved is not None:
            with restoring(self.checkpoint_path, self.name):
                set_rng_state(saved["rng"], self.generator)
            self.start = int(saved["step"])
            self.last_checkpoint = self.start
        return self.start

    def kept(self) -> str:
        """What a stopped run leaves to continue from (never claims a checkpoint that does not exist)."""
        last = self.last_checkpoint
        if last is None:
            return f"no checkpoint was written yet (the first comes after step {self.cfg.checkpoint_every}); run the stage again"
        return f"the checkpoint of step {last} is kept; continue with --resume"

    def advice(self) -> str:
        """How to get past a numerical failure: the settings that help can change on --resume."""
        change = f"lower lr (or guidance.guidance_scale) in a copy of {str(self.folder / 'config.yaml')!r}"
        if self.last_checkpoint is None:
            return (f"No checkpoint was written yet (the first comes after step {self.cfg.checkpoint_every}); {change} and run "
                    "the stage again with --config COPY")
        return f"The checkpoint of step {self.last_checkpoint} is kept; {change} and continue with --resume --config COPY"

    def save_config(self) -> None:
        save_config(self.cfg, self.folder / CONFIG_FILE)

    def checkpoint(self, step: int, done: bool = False) -> None:
        save_checkpoint(self.checkpoint_path, {"stage": self.name, "step": step, "done": done, "config": to_dict(self.cfg),
                                               **self.meta, **self.state(), "rng": rng_state(self.generator)})
        self.last_checkpoint = step

    def run(self, compute_loss: Callable[[int, float], Tuple[torch.Tensor, str]], optimizer: torch.optim.Optimizer,
            preview: Callable[[Path, bool], None], after_step: Optional[Callable[[int], None]] = None) -> None:
        """Steps ``self.start`` .. ``cfg.iters - 1``: ``compute_loss(step, progress)`` -> (loss, shading mode),
        an optimiser step, ``after_step(steps_done)`` (a stage's own checks), then the periodic checkpoint and
        ``preview(path, final=False)``; at the end ``preview(previews/final.png, final=True)``. The final
        checkpoint is :meth:`finish`'s."""
        cfg = self.cfg
        hooks = _HOOKS.get()
        bar = progress_bar(cfg.iters, self.start, self.progress, self.name)
        self.t0 = time.time()
        step = self.start
        try:
            for step in range(self.start, cfg.iters):
                try:
                    loss, mode = compute_loss(step, step / max(1, cfg.iters - 1))
                except NonFiniteStepError as e:
                    raise MeshdreamError(f"{self.name}: at step {step}, {e}. {self.advice()}") from None
                optimizer_step(optimizer, loss, step, self.name, self.advice())
                done = step + 1
                if after_step is not None:
                    after_step(done)
                bar.set_postfix(loss=f"{loss.item():.3g}", shading=mode[:4], refresh=False)
                bar.update(1)
                if done % cfg.checkpoint_every == 0 and done < cfg.iters:
                    self.checkpoint(done)
                if cfg.preview_every and done % cfg.preview_every == 0:
                    preview(self.preview_path(f"step_{done:06d}.png"), False)
                try:
                    for hook in hooks:
                        hook(self.name, done)
                except StopRun:
                    if self.last_checkpoint != done:
                        self.checkpoint(done)
                    raise
        except KeyboardInterrupt as e:  # say what is left to continue from (the CLI prints it); Ctrl-C or SIGTERM
            what = "terminated" if isinstance(e, Terminated) else "interrupted"
            raise type(e)(f"{self.name} {what} at step {step}; {self.kept()}") from None
        bar.close()
        preview(self.preview_path("final.png"), True)

    def finish(self) -> None:
        """The final checkpoint (``done``), after the stage wrote its outputs."""
        self.checkpoint(self.cfg.iters, done=True)

    def summary(self) -> str:
        """'N steps in Ss' since :meth:`run` began."""
        return f"{max(0, self.cfg.iters - self.start)} steps in {time.time() - self.t0:.0f}s"
