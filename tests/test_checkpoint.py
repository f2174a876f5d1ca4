import os

import pytest
import torch

from meshdream.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
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
