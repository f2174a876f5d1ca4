"""meshdream: text to textured 3D asset by score distillation sampling (DreamFusion, Magic3D).

Stages, each a plain function (and a CLI command of the same name):
    coarse(prompt, out)  NeRF by SDS -> RUN/coarse/mesh.ply
    refine(run)          mesh + UV texture by SDS through differentiable rasterisation
    export(run, format)  GLB / glTF / OBJ / PLY
    generate(prompt, out) all three, plus turntables (GIF, MP4)
    batch(prompts, out)   generate for many prompts on Ray, with an index and a gallery
"""
__version__ = "0.1.0"

__all__ = ["coarse", "refine", "export", "generate", "batch", "__version__"]


def __getattr__(name):  # lazy: `import meshdream` stays cheap, torch loads on first use
    if name in ("coarse", "refine", "export", "generate"):
        import importlib

        return getattr(importlib.import_module(f"meshdream.stages.{name}"), name)
    if name == "batch":
        from .batching.runner import batch

        return batch
    raise AttributeError(f"module 'meshdream' has no attribute {name!r}")
