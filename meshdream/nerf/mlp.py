"""The coarse field's small ReLU network: torch.nn.Linear layers (the parameters, their state-dict keys,
the reference and the CUDA path), run on the CPU by a fused C++ kernel (cpp/mlp.cpp) that takes a tile of
points through every layer while it is in cache and recomputes the activations in backward."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..engine.kernels import KERNEL_DTYPES, kernel

# "auto": the C++ kernel for CPU float32 / float64 tensors, torch's layers otherwise
_BACKENDS = ("auto", "cpp", "reference")


class ReluMLP(nn.Sequential):
    """Linear, ReLU, ..., Linear: widths dims[0] -> ... -> dims[-1] (no activation after the last layer).

    features [N, dims[0]] -> [N, dims[-1]]. An nn.Sequential, so its state-dict keys are the plain
    layers' ("0.weight", "0.bias", "2.weight", ...) whichever backend runs it."""

    def __init__(self, dims: list[int], backend: str = "auto"):
        if backend not in _BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(_BACKENDS)}")
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.backend = backend

    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = [p for lin in self.linears() for p in (lin.weight, lin.bias)]
        if self.backend == "cpp" or (self.backend == "auto" and _use_kernel(x, params)):
            return _MLPFunction.apply(x, *params)
        return super().forward(x)


def _use_kernel(x: torch.Tensor, params: list[torch.Tensor]) -> bool:
    return (x.device.type == "cpu" and x.dtype in KERNEL_DTYPES
            and all(p.device.type == "cpu" and p.dtype == x.dtype for p in params))


def _arrays(tensors) -> list:
    return [t.detach().contiguous().numpy() for t in tensors]


class _MLPFunction(torch.autograd.Function):
    """Autograd glue over meshdream._C.mlp_{fwd,bwd}: inputs x, then weight and bias of each layer."""

    @staticmethod
    def forward(ctx, x, *params):
        xs = x.detach().contiguous()
        out = kernel("mlp_fwd", x.dtype)(xs.numpy(), _arrays(params[0::2]), _arrays(params[1::2]),
                                         threads=torch.get_num_threads())
        ctx.save_for_backward(xs, *params)  # the parameters themselves: autograd refuses them if changed in place
        return torch.from_numpy(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        xs, *params = ctx.saved_tensors
        grad_w, grad_b, grad_x = kernel("mlp_bwd", xs.dtype)(
            xs.numpy(), _arrays(params[0::2]), _arrays(params[1::2]), grad_out.to(xs.dtype).contiguous().numpy(),
            need_x=ctx.needs_input_grad[0], threads=torch.get_num_threads())
        grads = [torch.from_numpy(g) for pair in zip(grad_w, grad_b) for g in pair]
        return (torch.from_numpy(grad_x) if grad_x is not None else None, *grads)
