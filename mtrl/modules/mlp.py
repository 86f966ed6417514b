"""Plain and ensembled multi-layer perceptrons."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack: ``in_dim → hidden[0] → … → hidden[-1] → out_dim`` (no output
    activation). Weights use PyTorch's default ``nn.Linear`` initialization."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers stored as one ``[E, in, out]`` weight and applied with a
    single batched matmul. Input ``[B, in]`` (shared by all members) or ``[E, B, in]``; output
    ``[E, B, out]``. Each member is initialized like ``nn.Linear`` (uniform ±1/√in)."""

    def __init__(self, num_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            # Shared input: one [B, in] x [in, E*out] matmul instead of E copies of the input.
            out = x @ self.weight.permute(1, 0, 2).reshape(self.in_features, -1)
            out = out.view(x.shape[0], self.num_members, self.out_features).transpose(0, 1)
            return out + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"members={self.num_members}, in={self.in_features}, out={self.out_features}"


class EnsembleMLP(nn.Module):
    """``E`` MLPs of identical shape evaluated together (e.g. SAC's twin critics)."""

    def __init__(self, num_members: int, in_dim: int, hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(
            EnsembleLinear(num_members, dims[i], dims[i + 1]) for i in range(len(dims) - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h
