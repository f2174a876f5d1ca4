"""The learned background (meshdream/nerf/background.py) and the coarse stage's use of it."""
import torch

from meshdream.nerf.background import LearnedBackground


def _dirs(n=256, seed=0):
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return d / d.norm(dim=1, keepdim=True)


def test_starts_as_the_solid_colour_in_every_direction():
    bg = LearnedBackground((1.0, 0.5, 0.0))
    out = bg(_dirs())
    # the colour's logit is clamped to [0.02, 0.98] so the start is finite and can still learn
    assert torch.allclose(out, torch.tensor([0.98, 0.5, 0.02]).expand_as(out), atol=1e-6)


def test_learns_a_colour_that_depends_on_the_view_direction():
    """Fit 'red looking up, blue looking down': the MLP of the direction can hold it (a constant could not)."""
    torch.manual_seed(0)
    bg = LearnedBackground()
    opt = torch.optim.Adam(bg.parameters(), lr=0.02)
    d = _dirs(512)
    target = torch.where(d[:, 2:] > 0, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    for _ in range(300):
        loss = ((bg(d) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = _dirs(256, seed=1)
    out = bg(test).detach()
    up, down = test[:, 2] > 0.3, test[:, 2] < -0.3
    assert out[up, 0].mean() > 0.8 and out[up, 2].mean() < 0.2 and out[down, 2].mean() > 0.8 and out[down, 0].mean() < 0.2


def test_coarse_stage_trains_the_learned_background(tmp_path, tiny_configs):
    """coarse with learned_background: the background is optimised with the field and checkpointed; the
    previews and the mesh do not use it."""
    from meshdream.engine.checkpoint import load_checkpoint
    from meshdream.stages.coarse import coarse

    out = tmp_path / "run"
    coarse("a red cube", out, config=tiny_configs["coarse"], overrides={"learned_background": True, "background_lr": 0.05},
           progress=False)
    state = load_checkpoint(out / "coarse" / "checkpoint.pt")["background"]
    start = LearnedBackground((1.0, 1.0, 1.0)).state_dict()
    assert state.keys() == start.keys()
    moved = max(float((state[k] - start[k]).abs().max()) for k in ("mlp.2.weight", "mlp.2.bias"))
    assert moved > 1e-3  # SDS's gradient reached the background's parameters through the renders
