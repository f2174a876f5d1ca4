"""The layout of a RUN folder, shared by every stage.

RUN/
  coarse/prompt.yaml        prompt, negative prompt and seed of the RUN
  coarse/config.yaml        config the coarse stage ran with
  coarse/checkpoint.pt      latest coarse checkpoint (atomic)
  coarse/previews/          turntable strips  step_000100.png …
  coarse/mesh.ply           coarse mesh (vertex colours = NeRF albedo)
  coarse/field.pt           final NeRF parameters + config (for baking the texture in refine)
  refine/config.yaml, refine/checkpoint.pt, refine/previews/
  refine/mesh.obj, refine/mesh.mtl, refine/texture.png   refined textured mesh
  export/model.glb …        exported assets
  turntable.gif             turntable of the final asset (generate)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserInputError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def create(cls, path: str | os.PathLike) -> "RunDir":
        """Make (or reuse) RUN and check it is writable before any work starts."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise UserInputError(f"output {str(root)!r} exists and is not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise UserInputError(f"output folder {str(root)!r} is not writable: {e.strerror or e}") from None
        return cls(root)

    @classmethod
    def existing(cls, path: str | os.PathLike) -> "RunDir":
        """An existing RUN folder, or a UserInputError naming the path."""
        root = Path(path)
        if not root.is_dir():
            raise UserInputError(f"RUN folder {str(root)!r} does not exist; make one with `meshdream coarse PROMPT --out {root}`")
        return cls(root)

    # coarse stage
    @property
    def coarse(self) -> Path:
        return self.root / "coarse"

    @property
    def prompt_file(self) -> Path:
        return self.coarse / "prompt.yaml"

    @property
    def coarse_mesh(self) -> Path:
        return self.coarse / "mesh.ply"

    @property
    def coarse_field(self) -> Path:
        return self.coarse / "field.pt"

    # refine stage
    @property
    def refine(self) -> Path:
        return self.root / "refine"

    @property
    def refined_mesh(self) -> Path:
        return self.refine / "mesh.obj"

    @property
    def refined_texture(self) -> Path:
        return self.refine / "texture.png"

    # export
    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def turntable(self) -> Path:
        return self.root / "turntable.gif"

    def stage(self, name: str) -> Path:
        """Folder of stage ``name`` (created)."""
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p


def read_prompt(run: RunDir) -> dict:
    """prompt, negative_prompt and seed of RUN (written by its coarse stage)."""
    import yaml

    if not run.prompt_file.is_file():
        raise UserInputError(f"RUN {str(run.root)!r} has no coarse result; run `meshdream coarse PROMPT --out {run.root}` first")
    return yaml.safe_load(run.prompt_file.read_text())


def write_prompt(run: RunDir, info: dict) -> None:
    """Record prompt, negative_prompt and seed of RUN (atomically)."""
    import yaml

    from .checkpoint import atomic_write_bytes

    atomic_write_bytes(run.prompt_file, yaml.safe_dump(info, sort_keys=False).encode())
