"""The layout of a RUN folder, shared by every stage: every path into a RUN comes from here.

RUN/
  coarse/prompt.yaml        prompt, negative prompt and seed of the RUN
  coarse/config.yaml        config the coarse stage ran with
  coarse/checkpoint.pt      latest coarse checkpoint (atomic)
  coarse/previews/          turntable strips  step_000100.png …
  coarse/mesh.ply           coarse mesh (vertex colours = NeRF albedo)
  coarse/field.pt           final NeRF parameters + config (for baking the texture in refine)
  refine/config.yaml, refine/checkpoint.pt, refine/previews/
  <stage>/stage.json         what a finished stage was made from (meshdream.engine.provenance)
  refine/mesh.obj, refine/mesh.mtl, refine/texture.png   refined textured mesh
  export/model.glb …        exported assets
  turntable.gif             turntable of the final asset (generate)
  <stage>/stage.json        what a finished stage was made from (meshdream.engine.provenance)
  .meshdream-run            marks the folder as a RUN (meshdream writes only into RUN folders)
  .meshdream.lock           held (filelock) by the one process writing the RUN; .meshdream.lock.json says who

Only one process writes a RUN at a time: every stage holds :func:`run_lock` while it writes, and a
second process gets a RunLockedError naming the holder's pid, host and stage.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import MeshdreamError, UserInputError

MARKER = ".meshdream-run"
LOCK = ".meshdream.lock"
LOCK_INFO = ".meshdream.lock.json"
_STAGE_FOLDERS = ("coarse", "refine", "export")
# the folders whose files a finished stage records (stage.json): nothing but the stage itself writes there
RECORDED_STAGES = ("coarse", "refine")
# file names inside every optimisation stage's folder (RUN/<stage>/...)
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
PREVIEWS_FOLDER = "previews"
RECORD_FILE = "stage.json"


class RunLockedError(MeshdreamError):
    """Another process is writing the RUN."""


_held: dict[str, list] = {}  # RUN (resolved path) -> [FileLock, depth, stage] held by this process


@contextlib.contextmanager
def run_lock(root: str | os.PathLike, stage: str, read_only_ok: bool = False) -> Iterator[None]:
    """Hold RUN's exclusive lock while ``stage`` writes it. Re-entrant within a process (generate holds it
    around its stages); a lock held by another process is a RunLockedError naming the holder. The OS
    releases the lock when its holder dies, so a killed run never leaves RUN locked. With ``read_only_ok``
    (export, which only reads RUN) a RUN where no lock file can be made (read-only) is used unlocked."""
    import errno

    from filelock import FileLock, Timeout

    key = str(Path(root).resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    lock = FileLock(os.path.join(key, LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(f"RUN {str(root)!r} is in use: {_holder(key)}; wait for it to finish, or write to another "
                             "folder with --out") from None
    except OSError as e:
        if read_only_ok and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            yield
            return
        raise UserInputError(f"cannot lock RUN {str(root)!r}: {e.strerror or e}") from None
    _held[key] = [lock, 1, stage]
    info = os.path.join(key, LOCK_INFO)
    try:
        from ..atomic_files import atomic_write_bytes

        atomic_write_bytes(info, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                                             "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode())
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(info)
        lock.release()


def locks_run(stage: str, open_run: Callable[..., "RunDir"], read_only_ok: bool = False):
    """Decorate a stage function so it runs holding its RUN's lock. ``open_run(**arguments)`` checks the
    function's arguments and returns the RunDir (it runs first, so bad input fails before any file is made).
    A folder that is not a RUN is not locked (nothing is written into it)."""
    import functools
    import inspect

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return fn(*args, **kwargs)  # let Python report the bad call
            bound.apply_defaults()
            run = open_run(**bound.arguments)
            if not is_run(run.root):  # nothing of ours to protect; the stage says what is missing
                return fn(*args, **kwargs)
            try:
                with run_lock(run.root, stage, read_only_ok=read_only_ok):
                    return fn(*args, **kwargs)
            except UserInputError:
                # refused for bad input: a RUN this call made and no stage has worked in is not left behind
                # (the same rule as the CLI's removed_on_usage_error, for Python API callers)
                if run.created and not holds_stage_work(run.root):
                    shutil.rmtree(run.root, ignore_errors=True)
                raise

        return wrapper

    return decorate


def _holder(root: str) -> str:
    try:
        d = json.loads(Path(root, LOCK_INFO).read_text())
        return f"process {d['pid']} on host {d['host']} is running the {d['stage']} stage (since {d['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process holds its lock (it is just starting or finishing)"


def make_output_folder(root: Path, kind: str, ours: bool, marker: str | None = None) -> None:
    """Make the output folder ``root`` (a meshdream ``kind``: RUN, batch) and check it is writable, before any
    work. A folder that holds files and is not ``ours`` is refused: meshdream would overwrite and delete files in
    it. ``marker``, when given, is created in it (the file that says the folder is ours)."""
    if root.exists() and not root.is_dir():
        raise UserInputError(f"output {str(root)!r} exists and is not a folder")
    if root.is_dir() and not ours and any(root.iterdir()):
        raise UserInputError(f"output folder {str(root)!r} already holds files and is not a meshdream {kind}; "
                             "choose a new or empty folder for --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"  # mkdir succeeds on an existing read-only folder: try a real write
        probe.write_bytes(b"")
        probe.unlink()
        if marker:
            (root / marker).touch()
    except OSError as e:
        raise UserInputError(f"output folder {str(root)!r} is not writable: {e.strerror or e}") from None


@dataclass(frozen=True)
class RunDir:
    root: Path
    created: bool = False  # made by this call (RunDir.create): a refused start removes it again (locks_run)

    @classmethod
    def create(cls, path: str | os.PathLike) -> "RunDir":
        """Make (or reuse) RUN and check it is writable before any work starts. An existing folder that is not
        empty and not a RUN is refused: meshdream would overwrite and delete files in it."""
        root = Path(path)
        check_output_path(root, "--out")
        created = not os.path.lexists(root)
        make_output_folder(root, "RUN", ours=is_run(root), marker=MARKER)
        return cls(root, created=created)

    def lock(self, stage: str):
        """``with run.lock("coarse"):`` — see :func:`run_lock`."""
        return run_lock(self.root, stage)

    @classmethod
    def existing(cls, path: str | os.PathLike) -> "RunDir":
        """An existing RUN folder, or a UserInputError naming the path."""
        root = Path(path)
        if not root.is_dir():
            if root.exists():
                raise UserInputError(f"RUN {str(root)!r} is a file, not a RUN folder; give the folder made by "
                                     "`meshdream coarse PROMPT --out RUN`")
            raise UserInputError(f"RUN folder {str(root)!r} does not exist; make one with `meshdream coarse PROMPT --out {root}`")
        return cls(root)

    # coarse stage
    @property
    def coarse(self) -> Path:
        return self.root / "coarse"

    @property
    def prompt_file(self) -> Path:
        return self.coarse / "prompt.yaml"

    @property
    def coarse_mesh(self) -> Path:
        return self.coarse / "mesh.ply"

    @property
    def coarse_field(self) -> Path:
        return self.coarse / "field.pt"

    # refine stage
    @property
    def refine(self) -> Path:
        return self.root / "refine"

    @property
    def refined_mesh(self) -> Path:
        return self.refine / "mesh.obj"

    @property
    def refined_texture(self) -> Path:
        return self.refine / "texture.png"

    # export
    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def turntable(self) -> Path:
        return self.root / "turntable.gif"

    @property
    def refined_material(self) -> Path:
        return self.refine / "mesh.mtl"

    def export_file(self, format: str) -> Path:
        """Where ``export`` writes a ``format`` asset by default."""
        return self.export / f"model.{format}"

    # any stage: RUN/<stage>/...
    def checkpoint(self, stage: str) -> Path:
        return self.root / stage / CHECKPOINT_FILE

    def config_file(self, stage: str) -> Path:
        return self.root / stage / CONFIG_FILE

    def record(self, stage: str) -> Path:
        return self.root / stage / RECORD_FILE


class CorruptRunFileError(MeshdreamError):
    """A file of a RUN cannot be read or does not hold what the stage that wrote it writes."""


@contextlib.contextmanager
def reading(path: str | os.PathLike, remedy: str) -> Iterator[None]:
    """Turn any failure while parsing the RUN file ``path`` into a CorruptRunFileError naming the file and
    ``remedy`` (what to rerun). Parsers of damaged files raise all kinds of errors; none is the user's bug."""
    try:
        yield
    except MeshdreamError:
        raise
    except Exception as e:
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CorruptRunFileError(f"RUN file {str(path)!r} is corrupted or unreadable ({type(e).__name__}"
                                  f"{': ' + detail if detail else ''}); {remedy}") from None


def rerun(run: "RunDir", stage: str) -> str:
    """What to do when ``stage``'s files in RUN are unusable: the command that makes them again."""
    command = {"coarse": f"meshdream coarse PROMPT --out {run.root}", "refine": f"meshdream refine {run.root}",
               "export": f"meshdream export {run.root}"}[stage]
    return f"run the {stage} stage again: `{command}`"


def read_yaml(path: str | os.PathLike, remedy: str) -> dict:
    """A YAML mapping written by a stage, or CorruptRunFileError naming the file."""
    import yaml

    with reading(path, remedy):
        data = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        return data


def no_result(run: RunDir, what: str = "no coarse result") -> UserInputError:
    """RUN lacks ``what``: say how to make it. A folder that is not a RUN and holds other files gets a new folder
    suggested: meshdream refuses to write into it (see :func:`make_output_folder`)."""
    root = run.root
    if not is_run(root) and root.is_dir() and any(p.name != ".DS_Store" for p in root.iterdir()):
        return UserInputError(f"{str(root)!r} is not a meshdream RUN folder (it holds other files and no coarse or refine "
                              "result); make a RUN in a new or empty folder: `meshdream generate PROMPT --out NEW_FOLDER`")
    return UserInputError(f"RUN {str(root)!r} has {what}; run `meshdream coarse PROMPT --out {root}` first")


def read_prompt(run: RunDir) -> dict:
    """prompt, negative_prompt and seed of RUN (written by its coarse stage)."""
    if not run.prompt_file.is_file():
        raise no_result(run)
    remedy = rerun(run, "coarse")
    info = read_yaml(run.prompt_file, remedy)
    with reading(run.prompt_file, remedy):
        if not isinstance(info.get("prompt"), str) or not info["prompt"].strip():
            raise ValueError("no prompt in it")
        if not isinstance(info.get("negative_prompt") or "", str):
            raise ValueError("negative_prompt is not text")
    return info


def write_prompt(run: RunDir, info: dict) -> None:
    """Record prompt, negative_prompt and seed of RUN (atomically)."""
    import yaml

    from ..atomic_files import atomic_write_bytes

    atomic_write_bytes(run.prompt_file, yaml.safe_dump(info, sort_keys=False).encode())


def check_output_path(path: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse an output path inside a RUN's stage folders (coarse/, refine/) or onto a RUN's own marker and lock
    files, however it is spelled (``..``, symlinks): writing there would destroy a finished stage. Returns the path."""
    path = Path(path)
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError) as e:
        raise UserInputError(f"{option} {str(path)!r} is not a usable path: {e}") from None
    for folder in [resolved, *resolved.parents]:
        if folder.name in RECORDED_STAGES and is_run(folder.parent):
            raise UserInputError(
                f"{option} {str(path)!r} is inside the {folder.name} stage folder of RUN {str(folder.parent)!r}; only the "
                f"{folder.name} stage writes there (anything else would destroy its result). Write elsewhere, e.g. "
                f"{str(folder.parent / 'export' / (resolved.name if resolved != folder else 'NAME'))!r}")
    if resolved.name in (MARKER, LOCK, LOCK_INFO, RECORD_FILE) and is_run(resolved.parent):
        raise UserInputError(f"{option} {str(path)!r} is a file meshdream keeps in RUN {str(resolved.parent)!r}; write elsewhere")
    return path


def is_run(root: Path) -> bool:
    """A RUN folder: marked, or (made before the marker existed) holding a stage folder."""
    return (root / MARKER).is_file() or any((root / name / "config.yaml").is_file() for name in _STAGE_FOLDERS[:2])


def _finished_record(path: Path) -> bool:
    try:
        return json.loads(path.read_bytes()).get("finished") is not False
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: keep it rather than risk deleting a finished stage


def holds_stage_work(path: Path) -> bool:
    """``path`` (a RUN or a stage folder) holds a finished stage (a record saying so) or a stage checkpoint:
    work a user would lose if it were deleted. (A stage writes an unfinished record when it starts.)"""
    if not path.is_dir():
        return False
    return next(path.rglob(CHECKPOINT_FILE), None) is not None or any(map(_finished_record, path.rglob(RECORD_FILE)))


@contextlib.contextmanager
def removed_on_usage_error(*paths: str | os.PathLike):
    """Remove those of ``paths`` that did not exist before when a UserInputError escapes the block, so a
    command refused for bad input leaves no empty or partial RUN (or stage) folder behind. A new folder that
    holds stage work by then is kept: `generate` refused in its refine stage keeps the finished coarse stage."""
    # "" (the folder of a bare file name, os.path.dirname("x.glb")) is the working folder: it exists, keep it
    new = [Path(p) for p in (os.fspath(p) or "." for p in paths) if not os.path.lexists(p)]
    try:
        yield
    except UserInputError:
        for p in new:
            if not holds_stage_work(p):
                shutil.rmtree(p, ignore_errors=True)
        raise
