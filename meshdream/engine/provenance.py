"""What each stage of a RUN was made from, so nothing stale or mixed is ever used.

A finished stage writes ``RUN/<stage>/stage.json`` (JSON, atomically, after all its outputs):

    {"stage": "refine", "prompt": ..., "negative_prompt": ..., "config_hash": sha256 of its config,
     "upstream": {"coarse": <the coarse stage's fingerprint it started from>},
     "outputs": {"mesh.obj": sha256, "texture.png": sha256, ...}, "fingerprint": sha256 of all the above}

A stage that starts (fresh or resumed) first replaces its record by ``{"stage": ..., "finished": false}``,
so a half-rerun stage is never taken for a finished one. :func:`verified` checks a record against the
files on disk (a disk-full failure or a hand edit shows as a mismatch) and against its upstream stage
(re-running coarse makes refine stale); every refusal says what to rerun. A stage folder with no record
at all was made by hand or by a meshdream older than records: it is used with an UnrecordedStageWarning.

:func:`check_stages` is the one rule for every command that reads a RUN: refine (the coarse stage it starts
from), export, render and a batch's finished prompt (the asset: the refine stage once it has begun, else coarse).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import MeshdreamError
from .run import RECORD_FILE as RECORD  # the RUN layout's names live in run.py
from .run import RunDir, rerun

UPSTREAM = {"coarse": None, "refine": "coarse"}


class StaleStageError(MeshdreamError):
    """A stage's outputs are missing, changed since they were made, or made from another upstream result."""


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(config: Any) -> str:
    """sha256 of a dataclass config's canonical JSON."""
    from ..config import to_dict

    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()


def _fingerprint(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class UnrecordedStageWarning(UserWarning):
    """A stage folder without a record: its origin cannot be checked."""


def mark_started(folder: Path, stage: str) -> None:
    """The stage is (re)running: until it finishes, downstream stages and exports refuse its folder."""
    from ..atomic_files import atomic_write_bytes

    atomic_write_bytes(Path(folder) / RECORD, json.dumps({"stage": stage, "finished": False}).encode())


def write_record(folder: Path, stage: str, *, prompt: str, negative_prompt: str, config: Any,
                 upstream: Optional[dict], outputs: Iterable[Path]) -> dict:
    """Record a finished stage (after its outputs are written); returns the record."""
    from ..atomic_files import atomic_write_bytes

    record = {"stage": stage, "finished": True, "prompt": prompt, "negative_prompt": negative_prompt or "", "config_hash": config_hash(config),
              "upstream": dict(upstream or {}), "outputs": {Path(p).name: file_digest(p) for p in outputs}}
    record["fingerprint"] = _fingerprint(record)
    atomic_write_bytes(Path(folder) / RECORD, json.dumps(record, indent=1).encode())
    return record


def read_record(run: RunDir, stage: str) -> Optional[dict]:
    """RUN's record of ``stage`` (None when the stage has not finished)."""
    from .run import reading

    path = run.root / stage / RECORD
    if not path.is_file():
        return None
    with reading(path, rerun(run, stage)):
        record = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(record, dict) or record.get("stage") != stage or not isinstance(record.get("finished"), bool):
            raise ValueError("not a stage record")
        if record["finished"] and (not isinstance(record.get("outputs"), dict) or not isinstance(record.get("upstream"), dict)):
            raise ValueError("not a stage record")
        if record["finished"] and record.get("fingerprint") != _fingerprint(record):
            raise ValueError("its fingerprint does not match its contents")
    return record


def outputs_match(run: RunDir, stage: str, record: dict) -> bool:
    """Do the stage's output files still hold exactly what the record says?"""
    folder = run.root / stage
    for name, digest in record["outputs"].items():
        path = folder / name
        if not path.is_file() or file_digest(path) != digest:
            return False
    return True


def record_intact(run: RunDir, stage: str) -> bool:
    """Is the finished ``stage``'s record there and are its outputs the ones it records? (A resumed stage whose
    outputs no longer match writes them again from its checkpoint.)"""
    record = read_record(run, stage)
    return record is not None and record["finished"] and outputs_match(run, stage, record)


def verified(run: RunDir, stage: str) -> Optional[dict]:
    """The record of a finished ``stage`` whose outputs are intact and whose upstream stage is the one it was
    made from; otherwise a StaleStageError saying what to rerun. None (with a warning) for a stage folder
    without any record (made by hand or by an older meshdream)."""
    record = read_record(run, stage)
    if record is None:
        warnings.warn(f"the {stage} stage of RUN {str(run.root)!r} has no {RECORD}; it was made by hand or by an older "
                      "meshdream, so where it came from cannot be checked", UnrecordedStageWarning, stacklevel=3)
        return None
    if not record["finished"]:
        if run.checkpoint(stage).is_file():
            resume = (f"meshdream coarse PROMPT --out {run.root} --resume" if stage == "coarse"
                      else f"meshdream refine {run.root} --resume")
            how = f"continue it with `{resume}`, or {rerun(run, stage)}"
        else:
            how = rerun(run, stage)
        raise StaleStageError(f"the {stage} stage of RUN {str(run.root)!r} has not finished; {how}")
    if not outputs_match(run, stage, record):
        raise StaleStageError(f"the {stage} result in {str(run.root / stage)!r} is incomplete or was changed after it was "
                              f"made (its files do not match {RECORD}); {rerun(run, stage)}")
    up = UPSTREAM[stage]
    if up is not None:
        try:
            upstream = verified(run, up)
        except StaleStageError as e:
            raise StaleStageError(f"the {stage} result in {str(run.root / stage)!r} cannot be used: {e}") from None
        if record["upstream"].get(up) != (upstream or {}).get("fingerprint"):
            raise StaleStageError(f"the {stage} result in {str(run.root / stage)!r} was made from an earlier {up} result "
                                  f"(the {up} stage ran again since); {rerun(run, stage)}")
    return record


def stage_begun(run: RunDir, stage: str) -> bool:
    """Has ``stage`` begun in RUN (a record, finished or not, or its main output)?"""
    main = {"coarse": run.coarse_mesh, "refine": run.refined_mesh}[stage]
    return (run.root / stage / RECORD).is_file() or main.is_file()


def check_stages(run: RunDir, reads: str) -> Optional[dict]:
    """The stage check of every command that reads RUN; returns the verified record of the stage it reads (None:
    an unrecorded, hand-made stage, used with a warning).

    ``reads="coarse"`` (refine): the coarse stage. ``reads="asset"`` (export, render, batch --resume): the newest
    stage, refine once it has begun (a record or a mesh), else coarse. A stage that has not finished, whose files
    changed since it was made, or that was made from an earlier upstream result is a StaleStageError saying what to
    rerun; a RUN without the stage is a UserInputError saying how to make it."""
    from .run import no_result

    if reads not in ("coarse", "asset"):
        raise ValueError(f"reads must be 'coarse' or 'asset', got {reads!r}")
    if reads == "asset" and stage_begun(run, "refine"):
        return verified(run, "refine")
    if not stage_begun(run, "coarse"):
        raise no_result(run, "no coarse result" if reads == "coarse" else "neither a refined nor a coarse mesh")
    return verified(run, "coarse")


def fingerprint_of(run: RunDir, stage: str) -> Optional[str]:
    """The fingerprint of RUN's verified ``stage`` (None for an unrecorded, hand-made one)."""
    record = verified(run, stage)
    return None if record is None else record["fingerprint"]
