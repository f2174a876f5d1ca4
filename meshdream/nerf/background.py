"""A learned background (DreamFusion): colour as a function of the view direction only.

SDS at large t asks for the prompt's colour over the whole frame. With a fixed white background the
only way to give it is to grow density everywhere until the object fills the box; a background that
can take the colour itself absorbs that pull, and returns to white as t anneals (the prior only ever
saw white backgrounds). Previews, turntables and extraction never use it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class LearnedBackground(nn.Module):
    """dirs [R, 3] (unit) -> colour [R, 3] in (0, 1); starts as the solid colour ``init`` everywhere."""

    def __init__(self, init: Sequence[float] = (1.0, 1.0, 1.0), hidden: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3))
        with torch.no_grad():
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.copy_(torch.logit(torch.tensor(list(init), dtype=torch.float32).clamp(0.02, 0.98)))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(dirs))
