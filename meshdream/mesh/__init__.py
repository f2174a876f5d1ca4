"""Meshes: marching cubes (C++) and clean-up (pymeshlab)."""
from .cleanup import clean_mesh
from .marching_cubes import marching_cubes

__all__ = ["marching_cubes", "clean_mesh"]
