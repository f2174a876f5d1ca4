"""Cameras, shading and rendering a mesh through the raster ops."""
