"""Writing files atomically: a reader sees the old file or the whole new one, never half of one.

Torch-free, so light callers (the config, the RUN folder, the Ray driver's index.json) need not import torch.
"""
from __future__ import annotations

import os
import tempfile

from .errors import MeshdreamError


class WriteError(MeshdreamError):
    """A file could not be written (full disk, no permission, ...)."""


def is_read_only(path: str | os.PathLike) -> bool:
    """An existing file nobody may write (no write bit; root's os.access says yes to anything)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and (not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    A failed write (full disk, no permission) leaves the old file, removes the temporary and raises a
    WriteError naming ``path``. A read-only file is not replaced (WriteError); a replaced file keeps its mode."""
    atomic_write_files({path: data})


def atomic_write_files(files: dict[str | os.PathLike, bytes]) -> None:
    """Write several files so that a failure leaves none of them changed: every file is first written in full to a
    temporary beside it and fsynced; only when all are on disk are they renamed over the old ones, in the order
    given (put the main file last: its presence then means the set is complete). A failure while writing (full
    disk, no permission, a read-only target) removes every temporary and raises a WriteError naming the file."""
    staged: list[tuple[str, str]] = []  # (temporary, target)
    try:
        for target, data in files.items():
            target = os.fspath(target)
            folder = os.path.dirname(os.path.abspath(target))
            if is_read_only(target):
                raise WriteError(f"cannot write {target!r}: the file is read-only, so meshdream leaves it as it is; make it "
                                 "writable (chmod u+w) or write elsewhere")
            try:
                os.makedirs(folder, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=folder)
                staged.append((tmp, target))
                try:
                    mode = os.stat(target).st_mode & 0o7777  # replacing a file keeps its permissions
                except OSError:
                    mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; give the usual permissions
                os.fchmod(fd, mode)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise WriteError(f"cannot write {target!r}: {e.strerror or e}; the previous version of the file, if any, "
                                 "is unchanged") from None
        for tmp, target in staged:
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise WriteError(f"cannot write {target!r}: {e.strerror or e}") from None
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(t)) for _, t in staged):
        try:  # make the renames themselves durable
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
