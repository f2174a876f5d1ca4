"""The traced UNet (CPU path of pixel-space guidance) gives exactly the eager UNet's numbers."""
import pytest
import torch

from meshdream.guidance import GuidanceConfig, load_guidance
from meshdream.guidance.traced_unet import TracedUNet
from tiny_models import save_tiny_deepfloyd_if


@pytest.fixture(scope="module")
def embedded():
    return load_guidance("embedded")


@pytest.mark.parametrize("batch", [2, 4])
def test_trace_matches_eager_unet_bit_for_bit(embedded, batch):
    unet = embedded.unet
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    t = torch.randint(20, 980, (batch,), generator=g)
    ctx = embedded.encode_text(["a red cube"] * batch)
    traced = TracedUNet(unet)
    with torch.no_grad():
        eager = unet(x, t, encoder_hidden_states=ctx).sample
        first, again = traced(x, t, ctx), traced(x * 0.5, t.flip(0), ctx.flip(0))  # new values, same trace
        eager_again = unet(x * 0.5, t.flip(0), encoder_hidden_states=ctx.flip(0)).sample
    assert torch.equal(first, eager) and torch.equal(again, eager_again)
    assert len(traced.traces) == 1


def test_one_trace_per_input_shape(embedded):
    traced = TracedUNet(embedded.unet)
    ctx = embedded.encode_text(["a red cube"])
    with torch.no_grad():
        for b in (1, 2, 1):
            traced(torch.zeros(b, 3, 32, 32), torch.full((b,), 500), ctx.expand(b, -1, -1))
    assert len(traced.traces) == 2


def test_sds_gradient_is_the_same_with_and_without_trace(tmp_path):
    """IF-style 6-channel UNet: the guidance's SDS gradient, traced (default on CPU) vs eager."""
    folder = save_tiny_deepfloyd_if(str(tmp_path / "if"))
    grads = []
    for trace in (True, False):
        guide = load_guidance(GuidanceConfig(name=folder, trace_unet=trace))
        assert (guide._unet_call is not None) == trace
        emb = guide.encode_prompt("a red cube")
        img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = guide.sds_loss(img, emb, torch.tensor([0.0, 120.0]), torch.tensor([10.0, 20.0]), 0.3, torch.Generator().manual_seed(0))
        out.loss.backward()
        grads.append(img.grad)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0
