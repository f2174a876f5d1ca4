"""The field's ReLU network: the fused C++ kernel (cpp/mlp.cpp) against torch.nn's layers."""
import pytest
import torch

from meshdream import _C
from meshdream.nerf.field import FieldConfig, NeRFField
from meshdream.nerf.hash_grid import HashGridConfig
from meshdream.nerf.mlp import ReluMLP, _MLPFunction

# the coarse field's network (8 -> 64 -> 64 -> 4), one without hidden layers, and odd widths that leave
# partial SIMD rows, partial tiles (64 points) and partial gradient blocks (1024 points)
SHAPES = [[8, 64, 64, 4], [8, 4], [5, 33, 17, 3], [16, 128, 7]]


def _pair(dims, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    ours = ReluMLP(dims, backend="cpp").to(dtype)
    ref = ReluMLP(dims, backend="reference").to(dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _x(n, d, dtype=torch.float32, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dims", SHAPES)
@pytest.mark.parametrize("n", [0, 1, 63, 2500])
def test_forward_matches_torch(dims, n):
    ours, ref = _pair(dims)
    x = _x(n, dims[0])
    a, b = ours(x), ref(x)
    assert a.shape == b.shape == (n, dims[-1])
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", SHAPES)
def test_gradients_match_torch(dims):
    ours, ref = _pair(dims)
    x1 = _x(2500, dims[0]).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    g = _x(2500, dims[-1], seed=2)
    (ours(x1) * g).sum().backward()
    (ref(x2) * g).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        scale = float(q.grad.abs().max())
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale), name


def test_gradcheck_in_float64():
    ours, _ = _pair([4, 9, 6, 3], torch.float64)
    x = _x(70, 4, torch.float64).requires_grad_()
    params = [p for p in ours.parameters()]
    assert torch.autograd.gradcheck(lambda x, *p: _MLPFunction.apply(x, *p), (x, *params), eps=1e-6, atol=1e-7)


def test_gradients_do_not_depend_on_the_thread_count():
    ours, _ = _pair([8, 64, 64, 4])
    lin = ours.linears()
    w = [m.weight.detach().numpy() for m in lin]
    b = [m.bias.detach().numpy() for m in lin]
    x, g = _x(5000, 8).numpy(), _x(5000, 4, seed=3).numpy()
    one = _C.mlp_bwd_f32(x, w, b, g, True, threads=1)
    two = _C.mlp_bwd_f32(x, w, b, g, True, threads=2)
    for a, c in zip(one[0] + one[1] + [one[2]], two[0] + two[1] + [two[2]]):
        assert torch.equal(torch.from_numpy(a), torch.from_numpy(c))


def test_input_gradient_is_skipped_when_not_needed():
    ours, _ = _pair([8, 16, 4])
    x = _x(10, 8)  # no requires_grad: the kernel returns no grad_x
    ours(x).sum().backward()
    assert x.grad is None and ours[0].weight.grad is not None


def test_auto_backend_uses_the_kernel_on_cpu_and_rejects_unknown_names():
    mlp = ReluMLP([8, 16, 4])
    assert mlp.backend == "auto"
    out = mlp(torch.zeros(2, 8))
    assert out.grad_fn is not None and "MLPFunction" in type(out.grad_fn).__name__
    # float16 has no kernel: torch's layers run it
    assert "MLPFunction" not in type(mlp.half()(torch.zeros(2, 8).half()).grad_fn).__name__
    with pytest.raises(ValueError, match="backend 'cuda-kernel'"):
        ReluMLP([8, 4], backend="cuda-kernel")


def test_the_field_keeps_its_state_dict_keys():
    # checkpoints written before the kernel (an nn.Sequential of Linear / ReLU) load unchanged
    f = NeRFField(FieldConfig(kind="sdf", hash_grid=HashGridConfig(levels=4, max_resolution=32)))
    keys = {k for k in f.state_dict() if k.startswith("mlp.")}
    assert keys == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias"}
    old = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    f.mlp.load_state_dict(old.state_dict())
    x = _x(300, 8)
    assert torch.allclose(f.mlp(x), old(x), rtol=1e-5, atol=1e-6)


def test_bad_shapes_are_refused_with_the_expected_layout():
    w = [torch.zeros(16, 8).numpy(), torch.zeros(4, 15).numpy()]
    b = [torch.zeros(16).numpy(), torch.zeros(4).numpy()]
    with pytest.raises(ValueError, match=r"weights\[1\] must be \[D_out, 16\]"):
        _C.mlp_fwd_f32(torch.zeros(3, 8).numpy(), w, b)
    with pytest.raises(ValueError, match=r"grad_out must be \[N, 16\]"):
        _C.mlp_bwd_f32(torch.zeros(3, 8).numpy(), w[:1], b[:1], torch.zeros(3, 4).numpy())
