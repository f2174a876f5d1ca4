"""Writing files atomically: a reader sees the old file or the whole new one, never half of one.

Torch-free, so light callers (the config, the RUN folder, the Ray driver's index.json) need not import torch.
"""
from __future__ import annotations

import os
import tempfile

from .errors import MeshdreamError


class WriteError(MeshdreamError):
    """A file could not be written (full disk, no permission, ...)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    A failed write (full disk, no permission) leaves the old file, removes the temporary and raises a
    WriteError naming ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {path!r}: {e.strerror or e}; the previous version of the file, if any, "
                             "is unchanged") from None
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
