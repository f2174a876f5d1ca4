"""Atomic, checksummed checkpoints.

A checkpoint file is ``MAGIC | sha256(payload) | payload`` where payload is ``torch.save`` of a dict.
It is written to a temporary file in the same folder, fsynced and renamed over the old one, so a
killed process leaves either the previous checkpoint or the new one, never half of one. On load the
checksum is verified: a corrupted file is a CheckpointError, never silently used.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from typing import Any

import torch

from .errors import CheckpointError

MAGIC = b"MESHDREAM-CKPT-1\n"
_DIGEST = 32


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete half-written ``.NAME.*.tmp`` files a killed process left in ``folder`` (the files they were
    meant to replace are intact)."""
    from pathlib import Path

    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, nested dicts) atomically with a checksum."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verifying its checksum.

    Raises CheckpointError naming the file when it is missing, truncated or corrupted.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _DIGEST:
        raise CheckpointError(f"checkpoint {path!r} is not a meshdream checkpoint or is truncated; delete it to start over")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST]
    payload = data[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path!r} is corrupted (checksum mismatch); delete it to start over")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as e:  # a checksummed payload that torch cannot read: wrong version or writer
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path!r} does not hold a state dict")
    return state


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Everything random a training loop draws from, so a resumed run repeats the same draws."""
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
