"""Texture operations on UV-mapped meshes: baking, normal maps."""
