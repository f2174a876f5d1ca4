"""3D-print formats: an asset as one closed solid in millimetres, +Z up, written as binary STL or 3MF.

asset (vertices [V, 3] in scene units, +Y up, split along UV seams) -> weld coincident vertices -> one
outward-facing closed surface -> rotate +Y up to +Z up (slicers' build direction) -> scale so the longest
side is ``size_mm`` -> rest on the build plate (min z = 0), centred over the origin -> STL / 3MF bytes.

Each writer is ``writer(asset, stem, size_mm=...) -> {file name: bytes}``, like every entry of the asset
writers' table (meshdream.asset.formats.WRITERS). Colour and texture are not written: neither format carries a
texture a slicer reads, and a print's colour is the filament's.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MeshdreamError, UserInputError

if TYPE_CHECKING:
    from .model import Asset

DEFAULT_SIZE_MM = 50.0  # longest side of a printed asset when --size-mm is not given
MIN_SIZE_MM, MAX_SIZE_MM = 0.1, 10000.0
PRINT_FORMATS = ("stl", "3mf")
# +Y up (glTF, meshdream's scenes) -> +Z up: x stays, y -> z, z -> -y (a rotation: det = +1, winding kept)
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


class NotSolidError(MeshdreamError):
    """The asset's surface does not close into a solid a slicer can fill."""


def check_size_mm(size_mm: float | None) -> float:
    """``size_mm`` (None: the default) as a float in range, or a UserInputError naming the allowed range."""
    if size_mm is None:
        return DEFAULT_SIZE_MM
    size = float(size_mm)
    if not np.isfinite(size) or not MIN_SIZE_MM <= size <= MAX_SIZE_MM:
        raise UserInputError(f"--size-mm {size_mm} is out of range; use {MIN_SIZE_MM:g} to {MAX_SIZE_MM:g} (millimetres, "
                             "the longest side of the print)")
    return size


def print_solid(asset: "Asset", size_mm: float | None = None):
    """The asset as a trimesh.Trimesh ready to slice: welded, closed, outward-facing, +Z up, millimetres,
    longest side ``size_mm``, resting on z = 0. Raises NotSolidError when the surface has holes."""
    import trimesh

    size = check_size_mm(size_mm)
    mesh = trimesh.Trimesh(np.asarray(asset.vertices, np.float64), np.asarray(asset.faces, np.int64), process=False)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)  # UV seams split vertices; a solid shares them
    mesh.update_faces(mesh.unique_faces() & mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise NotSolidError("the asset has no faces left after welding; nothing to print")
    if not mesh.is_watertight:
        trimesh.repair.fill_holes(mesh)  # pin-holes only (triangles and quads); larger gaps are refused below
    if not mesh.is_watertight:
        edges = trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)
        raise NotSolidError(f"the asset's surface is not closed ({len(edges)} open edges), so it is no solid a slicer can "
                            "fill; generate it again or repair it in a mesh tool before printing")
    trimesh.repair.fix_winding(mesh)
    if mesh.volume < 0:  # consistently inward: turn every face outward
        mesh.invert()
    vertices = mesh.vertices @ Y_UP_TO_Z_UP.T
    lo, hi = vertices.min(0), vertices.max(0)
    extent = float((hi - lo).max())
    if not extent > 0:
        raise NotSolidError("the asset is flat (zero extent); nothing to print")
    vertices = (vertices - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])) * (size / extent)
    return trimesh.Trimesh(vertices, mesh.faces, process=False)


def binary_stl(vertices: np.ndarray, faces: np.ndarray, header: str) -> bytes:
    """Binary STL: 80-byte header, triangle count, then per triangle a unit normal and three corners
    (float32, little endian) and a zero attribute word."""
    tri = np.asarray(vertices, np.float64)[faces]  # [F, 3, 3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    record = np.zeros(len(faces), dtype=np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")]))
    record["normal"], record["corners"] = n, tri
    head = header.encode("ascii", "replace")[:80].ljust(80, b" ")
    if head[:5].lower() == b"solid":  # an ASCII-STL marker would make readers parse the file as text
        head = b"mesh" + head[4:]
    return head + struct.pack("<I", len(faces)) + record.tobytes()


def stl_files(asset: "Asset", stem: str, size_mm: float | None = None) -> dict[str, bytes]:
    """Binary STL of one closed solid, millimetres, +Z up, longest side ``size_mm`` (default 50)."""
    from .. import __version__

    solid = print_solid(asset, size_mm)
    return {f"{stem}.stl": binary_stl(solid.vertices, solid.faces, f"meshdream {__version__}: one solid, millimetres, +Z up")}


def threemf_files(asset: "Asset", stem: str, size_mm: float | None = None) -> dict[str, bytes]:
    """3MF (unit millimetre) of one closed solid, +Z up, longest side ``size_mm`` (default 50)."""
    from trimesh.exchange.threemf import export_3MF

    solid = print_solid(asset, size_mm)
    try:
        return {f"{stem}.3mf": export_3MF(solid)}
    except NameError as e:  # trimesh's 3MF writer needs lxml
        raise MeshdreamError(f"3MF export needs lxml (pip install lxml): {e}") from None
