"""Export formats: one table, ``WRITERS = {format: writer}``.

A writer turns an :class:`~meshdream.asset.model.Asset` into the files of its format, ``{file name: bytes}``
(the main file first), without touching the disk; ``write_asset`` writes them atomically. The CLI's
``--format`` choices, the export, generate and batch commands and the refine stage's OBJ all go through this
table. A new format is one module here (a ``NAME_files(asset, stem)`` function) and one entry below. STL and
3MF (:mod:`meshdream.asset.printing`) write the asset as one closed solid for 3D printing (option ``size_mm``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

from ...errors import UserInputError
from ..model import Asset
from ..printing import stl_files, threemf_files  # 3D-print formats: one closed solid, millimetres, +Z up
from .gltf import glb_files, gltf_files
from .obj import obj_files
from .ply import ply_files

Writer = Callable[..., Dict[str, bytes]]  # writer(asset, stem, **options) -> {file name: bytes}
WRITERS: Dict[str, Writer] = {"glb": glb_files, "gltf": gltf_files, "obj": obj_files, "ply": ply_files,
                              "stl": stl_files, "3mf": threemf_files}
FORMATS = tuple(WRITERS)


def asset_files(asset: Asset, format: str, stem: str, **options) -> dict[str, bytes]:
    """The files of ``asset`` in ``format``: {file name: contents}, the main file first. ``options`` go to the
    format's writer (``size_mm`` for stl / 3mf)."""
    if format not in WRITERS:
        raise UserInputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return WRITERS[format](asset, stem, **options)


def write_files(files: dict[str, bytes], folder: Path) -> None:
    """Write the files all or nothing (:func:`meshdream.atomic_files.atomic_write_files`): a failure (a full disk)
    leaves no file of the set changed; the main (first) file is renamed into place last, so its presence means the
    set is complete."""
    from ...atomic_files import atomic_write_files

    names = list(files)
    atomic_write_files({Path(folder) / name: files[name] for name in names[1:] + names[:1]})


def write_asset(asset: Asset, path: Path, format: str, **options) -> Path:
    """Write ``asset`` as ``path`` (its format's main file) plus any side files beside it; ``options`` go to
    the format's writer."""
    path = Path(path)
    files = asset_files(asset, format, path.stem, **options)
    main = next(iter(files))
    if main != path.name:  # e.g. a user's --output name with another suffix
        files = {path.name: files.pop(main), **files}
    write_files(files, path.parent)
    return path
