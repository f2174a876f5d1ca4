import os

import pytest
import torch

from meshdream.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from meshdream.errors import CheckpointError


def test_round_trip(tmp_path):
    path = tmp_path / "ck.pt"
    state = {"step": 3, "w": torch.arange(5.0), "nested": {"s": "x"}}
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert back["step"] == 3 and torch.equal(back["w"], state["w"]) and back["nested"]["s"] == "x"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_overwrite_keeps_one_file(tmp_path):
    path = tmp_path / "ck.pt"
    for step in range(3):
        save_checkpoint(path, {"step": step})
    assert load_checkpoint(path)["step"] == 2
    assert os.listdir(tmp_path) == ["ck.pt"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corruption_is_detected(tmp_path, damage):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.randn(100)})
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a checkpoint")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_missing(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_rng_state_restores_draws():
    g = torch.Generator().manual_seed(1)
    s = rng_state(g)
    a = (torch.rand(3, generator=g), torch.rand(2))
    set_rng_state(s, g)
    b = (torch.rand(3, generator=g), torch.rand(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


class _Payload:
    """Unpickling this runs ``os.system`` (a classic malicious pickle): it must never happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path, marker, header: bool = True) -> None:
    """Write a pickle that would create ``marker`` when loaded; with ``header`` it carries our magic and a valid
    sha256, as an attacker can compute it."""
    import hashlib
    import io
    import pickle

    from meshdream.engine.checkpoint import MAGIC

    buf = io.BytesIO()
    torch.save({"step": 1, "evil": _Payload(marker)}, buf, pickle_module=pickle)
    payload = buf.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload if header else payload)


@pytest.mark.parametrize("header", [True, False])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, header):
    marker = tmp_path / "pwned"
    path = tmp_path / "ck.pt"
    malicious_checkpoint(path, marker, header)
    with pytest.raises(CheckpointError, match=str(path)) as e:
        load_checkpoint(path)
    assert not marker.exists()
    if header:
        assert "nothing in it was run" in str(e.value)


def test_format_1_checkpoint_gets_a_clear_message(tmp_path):
    path = tmp_path / "ck.pt"
    path.write_bytes(b"MESHDREAM-CKPT-1\n" + bytes(32) + b"old")
    with pytest.raises(CheckpointError, match="older meshdream.*without --resume"):
        load_checkpoint(path)


def test_rng_state_is_plain_data_and_restores_python_and_numpy(tmp_path):
    import random

    import numpy as np

    g = torch.Generator().manual_seed(3)
    random.random(), np.random.normal()  # a cached Gaussian in numpy's state
    save_checkpoint(tmp_path / "ck.pt", {"rng": rng_state(g)})
    a = (random.random(), np.random.normal(), np.random.rand(3), torch.rand(2, generator=g))
    set_rng_state(load_checkpoint(tmp_path / "ck.pt")["rng"], g)
    b = (random.random(), np.random.normal(), np.random.rand(3), torch.rand(2, generator=g))
    assert a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2]) and torch.equal(a[3], b[3])
