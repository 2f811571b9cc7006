"""The problem on which the peer backends are checked against the native one."""

from __future__ import annotations

import torch
from torch import nn

F64 = torch.float64


class Field(nn.Module):
    """A time-dependent MLP on (batch, 2, 3) states."""

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.l1 = nn.Linear(6, 8, dtype=F64)
            self.l2 = nn.Linear(8, 6, dtype=F64)

    def forward(self, t, y):
        out = self.l2(torch.tanh(self.l1(y.flatten(1)))).reshape(y.shape)
        return out * torch.cos(t) - 0.2 * y


def problem(outputs: int = 11):
    """The field, ``y0`` of shape (3, 2, 3) and ``outputs`` times evenly spaced on [0, 1]."""
    g = torch.Generator().manual_seed(1)
    y0 = torch.randn(3, 2, 3, generator=g, dtype=F64)
    return Field(), y0, torch.linspace(0.0, 1.0, outputs, dtype=F64)
