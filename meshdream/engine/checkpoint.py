"""Atomic, checksummed checkpoints.

A checkpoint file is ``MAGIC | sha256(payload) | payload`` where payload is ``torch.save`` of a dict
of plain data only: tensors, numbers, strings, None and lists / tuples / dicts of them (RNG states
included, see :func:`rng_state`). It is written to a temporary file in the same folder, fsynced and
renamed over the old one, so a killed process leaves either the previous checkpoint or the new one,
never half of one. On load the checksum is verified (a corrupted file is a CheckpointError, never
silently used) and the payload is read with ``torch.load(weights_only=True)``: PyTorch's restricted
unpickler builds only those plain types, so a crafted file cannot run code. The checksum guards
against damage, not against tampering (anyone can recompute it); the restricted loader is the
security boundary.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import torch

from ..atomic_files import atomic_write_bytes
from ..errors import CheckpointError

MAGIC = b"MESHDREAM-CKPT-2\n"
# format 1 pickled numpy / Python RNG objects and was read with the unrestricted unpickler
OLD_MAGICS = (b"MESHDREAM-CKPT-1\n",)
_DIGEST = 32


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, nested dicts) atomically with a checksum."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    remedy: str = "delete it to start over") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verifying its checksum.

    Never executes code from the file (``weights_only=True``). Raises CheckpointError naming the file
    when it is missing, truncated, corrupted, of an older format or holds anything but plain data; a damaged
    file's message ends in ``remedy`` (what brings the file back: a stage's output is made by rerunning it).
    """
    import pickle

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {e.strerror or e}") from None
    if data.startswith(OLD_MAGICS):
        raise CheckpointError(
            f"checkpoint {path!r} was written by an older meshdream (format 1, which stored Python objects that cannot "
            "be loaded without trusting the file); delete it and run the stage that wrote it again without --resume")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _DIGEST:
        raise CheckpointError(f"checkpoint {path!r} is not a meshdream checkpoint or is truncated; {remedy}")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST]
    payload = data[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path!r} is corrupted (checksum mismatch); {remedy}")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # the restricted unpickler met a global it does not allow: refuse, never run it
        first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path!r} holds objects other than plain tensors and numbers and was not "
                              f"loaded (nothing in it was run): {first}; {remedy}") from None
    except Exception as e:  # a checksummed payload that torch cannot read: wrong version or writer
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {type(e).__name__}: {str(e)[:200]}; {remedy}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path!r} does not hold a state dict; {remedy}")
    return state


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Everything random a training loop draws from, so a resumed run repeats the same draws.

    Plain tensors, numbers and strings only (no numpy or Python objects), so it loads with
    ``weights_only=True``."""
    import random

    import numpy as np

    version, mt, gauss = random.getstate()
    key, np_mt, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss},
        "numpy": {"key": str(key), "state": torch.from_numpy(np_mt.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
