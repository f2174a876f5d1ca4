"""The asset: a textured mesh, loading it from a RUN, its metrics and the export formats."""
