"""The file a command writes where the user says (``export --output``, ``render --output``), checked before any work.

- The file's extension names its format: ``--output x.obj`` writes OBJ; with ``--format`` given too, an extension
  that disagrees (``--format ply --output x.glb``) is a usage error, never a PLY file named .glb.
- It is never inside a RUN's stage folders (:func:`meshdream.engine.run.check_output_path`).
- A read-only file is not replaced, a folder is not a file, and the folder must be writable.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from ..atomic_files import is_read_only
from ..errors import UserInputError
from .run import check_output_path


def format_of(output: str | os.PathLike, format: str | None, formats: Sequence[str]) -> str:
    """The format of the file ``output``: ``format`` when given (it must match the extension), else the extension's."""
    path = Path(output)
    ext = path.suffix[1:].lower()
    listed = ", ".join("." + f for f in formats)
    if format is None:
        if ext not in formats:
            raise UserInputError(f"--output {str(path)!r}: the extension {'.' + ext if ext else '(none)'} names no format "
                                 f"meshdream writes here; end the name in one of {listed}")
        return ext
    if format not in formats:
        raise UserInputError(f"unknown format {format!r}; choose one of {', '.join(formats)}")
    if ext != format:
        other = f", or use --format {ext}" if ext in formats else ""
        raise UserInputError(f"--output {str(path)!r} ends in {'.' + ext if ext else 'no extension'} but --format is {format}: "
                             f"the file would hold {format} under another name. Name it "
                             f"{str(path.with_name(path.stem + '.' + format) if ext else path.with_name(path.name + '.' + format))!r}{other}")
    return format


def output_file(output: str | os.PathLike | None, format: str | None, formats: Sequence[str],
                default: Callable[[str], Path]) -> tuple[Path, str]:
    """(path, format) to write: ``output`` (its format from :func:`format_of`), or ``default(format)`` (format
    default: ``formats[0]``). Every check that can fail runs here, before any work: UserInputError naming the path."""
    if output is None:
        fmt = format if format is not None else formats[0]
        if fmt not in formats:
            raise UserInputError(f"unknown format {fmt!r}; choose one of {', '.join(formats)}")
        path = Path(default(fmt))
    else:
        path = Path(output)
        if not str(output).strip():
            raise UserInputError("--output is empty; give a file name")
        if path.is_dir():
            raise UserInputError(f"--output {str(path)!r} is a folder; give a file name such as "
                                 f"{str(path / ('model.' + (format or formats[0])))!r}")
        fmt = format_of(path, format, formats)
    check_output_path(path)
    if path.is_dir():
        raise UserInputError(f"{str(path)!r} is a folder; give a file name with --output")
    if is_read_only(path):
        raise UserInputError(f"--output {str(path)!r} is read-only; meshdream does not replace a protected file. Make it "
                             "writable (chmod u+w) or write elsewhere")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()  # writable? (checked before any work)
    except OSError as e:
        raise UserInputError(f"cannot write to the output folder {str(path.parent)!r}: {e.strerror or e}") from None
    return path, fmt
