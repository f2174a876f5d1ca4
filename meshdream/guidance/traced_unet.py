"""A diffusers UNet run as TorchScript traces, one per input shape: the same numbers with less Python
dispatch per call.

The embedded prior's UNet is small (1.7 M parameters at 32 px), so eager mode spends about a quarter of
its CPU time walking diffusers' modules rather than computing (scripts/bench_unet.py measures eager vs
traced in one process). SDS calls it with the same shapes every step, so one trace per shape is reused.
"""
from __future__ import annotations

import warnings
from typing import Dict, Tuple

import torch


class _EpsOnly(torch.nn.Module):
    """UNet2DConditionModel(sample, timestep, encoder_hidden_states) -> the output tensor alone (traceable)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


class TracedUNet:
    """``traced(sample [B, C, H, W], timestep [B], context [B, L, D]) -> output [B, C', H, W]``.

    Traces lazily on the first call with a new (shapes, dtypes, device); weights are shared with the
    eager module (not frozen), so the model's memory is not doubled. Inference only: call under no_grad."""

    def __init__(self, unet: torch.nn.Module):
        self.module = _EpsOnly(unet).eval()
        self.traces: Dict[Tuple, torch.jit.ScriptModule] = {}

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(x.shape), x.dtype, x.device) for x in (sample, timestep, context))
        trace = self.traces.get(key)
        if trace is None:
            with torch.no_grad(), warnings.catch_warnings():
                # diffusers' shape checks become constants in the trace: right, since each shape gets its own
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # torch 2.13 marks jit.trace deprecated in favour of torch.compile / torch.export; compile costs
                # tens of seconds and a C++ toolchain per run, which is what this saves on a 400-step CPU run
                warnings.simplefilter("ignore", DeprecationWarning)
                trace = torch.jit.trace(self.module, (sample, timestep, context), check_trace=False)
            self.traces[key] = trace
        return trace(sample, timestep, context)
