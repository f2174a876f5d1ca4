"""The web app's runs: RUN folders under one runs folder, made by ``meshdream.generate`` in a worker thread.

RUNS/<YYYYmmdd-HHMMSS>-<slug>/   a RUN folder (the layout of meshdream.engine.run), plus
    app.json                      what the page needs: prompt, settings, status, error, progress, downloads
RUNS/.downloads/<name>.zip       the whole RUN folder, zipped once it finished

One run at a time: :class:`Runner` owns the worker thread; the page follows the active run by polling
:meth:`Runner.snapshot` (so a reloaded page picks up a run where it is). Cancel asks the stage loop to
stop (``stage_loop.StopRun``): it checkpoints the finished step, and :meth:`Runner.start` with
``resume`` continues the RUN from there through ``generate(..., resume=True)``.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..atomic_files import atomic_write_bytes
from ..config import SEED_MAX
from ..errors import MeshdreamError, UserInputError
from ..engine.run import CONFIG_FILE, PREVIEWS_FOLDER, RunDir

log = logging.getLogger("meshdream.app")

APP_FILE = "app.json"
DOWNLOADS = ".downloads"
STAGES = ("coarse", "refine", "export")
MAX_STEPS = 20000  # per stage, from the page
PREVIEWS_PER_STAGE = 8  # preview strips a stage writes during an app run (its preview_every follows its steps)
DOWNLOAD_FORMATS = ("glb", "obj", "stl")


@dataclass
class Settings:
    """What the page asks for. ``coarse_steps`` / ``refine_steps`` None: the server's configs decide."""

    prompt: str
    seed: int = 0
    guidance: str = "embedded"
    preset: Optional[str] = None
    coarse_steps: Optional[int] = None
    refine_steps: Optional[int] = None


@dataclass
class Progress:
    """Where a run is: ``stage`` (coarse / refine / export / done), steps ``done`` of ``total`` in it."""

    stage: str = "coarse"
    done: int = 0
    total: int = 0
    preview: Optional[str] = None  # newest preview strip (path)
    stages_done: list = field(default_factory=list)


def slug_of(prompt: str, length: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:length].strip("-") or "run"


def _int_in(name: str, value, lo: int, hi: int, optional: bool = False) -> Optional[int]:
    if value is None or value == "":
        if optional:
            return None
        raise UserInputError(f"{name} is empty; give a whole number from {lo} to {hi}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"{name} {value!r} is not a number; give a whole number from {lo} to {hi}") from None
    if number != int(number) or not lo <= number <= hi:
        raise UserInputError(f"{name} {value!r} is out of range; give a whole number from {lo} to {hi}")
    return int(number)


def known_words(guidance: str) -> Optional[list[str]]:
    """The vocabulary a guidance model reads (its meshdream_prior.json), or None when it reads any text."""
    from ..guidance.loading import resolve

    path, _ = resolve(guidance)
    meta = Path(path) / "meshdream_prior.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text()).get("vocabulary")


def example_prompts(guidance: str, limit: int = 8) -> list[str]:
    """Prompts the guidance model was trained on, from its metadata ("a red cube" ...); [] for a model
    without such metadata (Stable Diffusion and DeepFloyd IF read any text)."""
    from ..guidance.loading import resolve

    try:
        path, _ = resolve(guidance)
    except MeshdreamError:
        return []
    meta_file = Path(path) / "meshdream_prior.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    shapes, colours = meta.get("shapes") or [], meta.get("colours") or []
    # walk the colour x shape grid diagonally so the first few examples differ in both
    pairs = [(colours[(i + k) % len(colours)], shapes[i % len(shapes)])
             for k in range(len(colours)) for i in range(len(shapes))] if shapes and colours else []
    return [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in pairs[:limit]]


def check_settings(raw: dict, presets: list[str]) -> Settings:
    """The page's inputs -> Settings, or a UserInputError that names the bad value and what is allowed."""
    from ..guidance.base import check_prompt, prompt_words

    prompt = check_prompt(raw.get("prompt") or "")
    guidance = (raw.get("guidance") or "").strip() or "embedded"
    preset = raw.get("preset") or None
    if preset in ("none", ""):
        preset = None
    if preset is not None and preset not in presets:
        raise UserInputError(f"preset {preset!r} is unknown; choose one of none, {', '.join(presets)}")
    settings = Settings(prompt=prompt, seed=_int_in("the seed", raw.get("seed"), 0, SEED_MAX), guidance=guidance, preset=preset,
                        coarse_steps=_int_in("coarse steps", raw.get("coarse_steps"), 1, MAX_STEPS, optional=True),
                        refine_steps=_int_in("refine steps", raw.get("refine_steps"), 1, MAX_STEPS, optional=True))
    words = known_words(guidance)  # also refuses a guidance name that names no model
    if words:
        unknown = [w for w in dict.fromkeys(prompt_words(prompt)) if w not in set(words)]
        if unknown:
            raise UserInputError(f"the guidance model {guidance!r} does not know the word(s) {', '.join(map(repr, unknown))}; "
                                 f"it knows: {', '.join(w for w in words if w.isalpha())}")
    return settings


class Runner:
    """Runs ``meshdream.generate`` for one Settings at a time in a worker thread, into RUNS/<name>/."""

    def __init__(self, runs: str | Path, coarse_config=None, refine_config=None, device: Optional[str] = None):
        self.runs = Path(runs).resolve()
        self.runs.mkdir(parents=True, exist_ok=True)
        self.coarse_config, self.refine_config, self.device = coarse_config, refine_config, device
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._cancel = threading.Event()
        self.active: Optional[Path] = None
        self.progress = Progress()

    # ------------------------------------------------------------------------------ the runs folder

    def info(self, run: Path) -> dict:
        """RUN/app.json (empty dict when missing or unreadable)."""
        try:
            return json.loads((Path(run) / APP_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _write_info(self, run: Path, **changes) -> dict:
        data = dict(self.info(run), **changes)
        atomic_write_bytes(run / APP_FILE, json.dumps(data, indent=1).encode())
        return data

    def listing(self) -> list[tuple[str, str]]:
        """Earlier runs, newest first: (label, folder name)."""
        rows = []
        for folder in sorted((p for p in self.runs.iterdir() if (p / APP_FILE).is_file()), reverse=True):
            info = self.info(folder)
            status = "running" if folder == self.active else info.get("status", "?")
            rows.append((f"{folder.name[:15]} · {info.get('prompt', '?')} · {status}", folder.name))
        return rows

    def folder(self, name: str) -> Path:
        """RUNS/<name> for a name from :meth:`listing` (anything else is refused)."""
        path = (self.runs / str(name)).resolve()
        if path.parent != self.runs or not (path / APP_FILE).is_file():
            raise UserInputError(f"there is no run {name!r} in {str(self.runs)!r}; pick one from the list")
        return path

    # ------------------------------------------------------------------------------------ running

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, settings: Settings, resume: Optional[Path] = None) -> Path:
        """Start a run (or continue ``resume``, a RUN of this app) in the worker thread; returns its folder."""
        with self._lock:
            if self.busy():
                raise UserInputError("a run is in progress; wait for it to finish or cancel it")
            if resume is not None:
                run = resume
            else:
                run = self.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug_of(settings.prompt)}"
                n = 1
                while run.exists():
                    n += 1
                    run = run.with_name(f"{run.name.rstrip('-0123456789') or run.name}-{n}")
                RunDir.create(run)  # a RUN folder from the start (generate then writes into it)
            self._write_info(run, prompt=settings.prompt, settings=asdict(settings), status="running", error=None,
                             started=time.time(), finished=None, downloads={}, notes=[])
            self._cancel.clear()
            self.active, self.progress = run, Progress()
            self._thread = threading.Thread(target=self._work, args=(run, settings, resume is not None), daemon=True,
                                            name="meshdream-app-run")
            self._thread.start()
            return run

    def cancel(self) -> bool:
        """Ask the active run to stop after its current step (it checkpoints that step). False: none runs."""
        if not self.busy():
            return False
        self._cancel.set()
        return True

    def wait(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _hook(self, run: Path):
        from ..engine.stage_loop import StopRun

        def hook(stage: str, done: int) -> None:
            p = self.progress
            if stage != p.stage or not p.total:
                p.total = self._stage_iters(run, stage)
                if stage != p.stage and p.stage not in p.stages_done:
                    p.stages_done.append(p.stage)
                p.stage = stage
            p.done = done
            p.preview = self._newest_preview(run) or p.preview
            if self._cancel.is_set():
                raise StopRun(f"cancelled at {stage} step {done}")

        return hook

    @staticmethod
    def _stage_iters(run: Path, stage: str) -> int:
        import yaml

        try:
            return int(yaml.safe_load((run / stage / CONFIG_FILE).read_text())["iters"])
        except Exception:  # the bar then shows steps without a total
            return 0

    @staticmethod
    def _newest_preview(run: Path) -> Optional[str]:
        strips = [p for stage in ("refine", "coarse") for p in (run / stage / PREVIEWS_FOLDER).glob("*.png")]
        return str(max(strips, key=lambda p: p.stat().st_mtime_ns)) if strips else None

    def _work(self, run: Path, s: Settings, resume: bool) -> None:
        from .. import generate
        from ..engine.stage_loop import StopRun, step_hook

        cadence = [f"{stage}.preview_every={max(1, steps // PREVIEWS_PER_STAGE)}"
                   for stage, steps in (("coarse", s.coarse_steps), ("refine", s.refine_steps)) if steps]
        # a resumed stage keeps the settings its checkpoint saved (generate's resume rule; only steps are given
        # again); a stage that has not started yet starts with the server's config
        started = {stage: (run / stage / "checkpoint.pt").is_file() for stage in ("coarse", "refine")} if resume else {}
        configs = dict(coarse_config=None if started.get("coarse") else self.coarse_config,
                       refine_config=None if started.get("refine") else self.refine_config)
        if not resume:
            configs.update(guidance=s.guidance, preset=s.preset, seed=s.seed, overrides=cadence)
        try:
            with step_hook(self._hook(run)):
                generate(s.prompt, run, coarse_iters=s.coarse_steps, refine_iters=s.refine_steps, device=self.device,
                         resume=resume, progress=False, video=False, **configs)
            self.progress.stages_done = ["coarse", "refine"]
            self.progress.stage = "export"
            downloads, notes = self._downloads(run)
            self.progress.stage, self.progress.preview = "done", self._newest_preview(run)
            self._write_info(run, status="done", finished=time.time(), downloads=downloads, notes=notes)
        except StopRun as e:
            self._write_info(run, status="cancelled", finished=time.time(),
                             error=f"{e}; the run folder keeps a checkpoint of that step: Resume continues it")
        except MeshdreamError as e:
            self._write_info(run, status="failed", finished=time.time(), error=str(e))
        except BaseException as e:  # a bug: the page shows one line, the log keeps the traceback
            log.error("run %s failed:\n%s", run, traceback.format_exc())
            self._write_info(run, status="failed", finished=time.time(), error=f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                self.active = None

    def _downloads(self, run: Path) -> tuple[dict, list]:
        """GLB (generate wrote it), OBJ and STL through ``meshdream.export``, and the RUN folder as a zip."""
        from .. import export

        files, notes = {"glb": str(run / "export" / "model.glb")}, []
        for fmt in DOWNLOAD_FORMATS[1:]:
            try:
                files[fmt] = str(export(run, format=fmt))
            except MeshdreamError as e:
                notes.append(f"{fmt.upper()}: {e}")
        files["zip"] = str(self.zip_run(run))
        return files, notes

    def zip_run(self, run: Path) -> Path:
        """RUNS/.downloads/<name>.zip: the whole RUN folder (its lock files left out)."""
        import zipfile

        from ..engine.run import LOCK, LOCK_INFO

        out = self.runs / DOWNLOADS / f"{run.name}.zip"
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_name(f".{out.name}.part")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(run.rglob("*")):
                if path.is_file() and path.name not in (LOCK, LOCK_INFO):
                    z.write(path, Path(run.name) / path.relative_to(run))
        tmp.replace(out)
        return out

    def snapshot(self) -> dict:
        """The active run's folder and progress (None when no run is active)."""
        run = self.active
        return {"run": run, "progress": Progress(**asdict(self.progress)) if run is not None else None}
