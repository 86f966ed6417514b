"""Gradient combiners: turn a per-task loss vector ``[num_tasks]`` into parameter gradients.

Agents never call ``backward`` on a scalar they reduced themselves; they hand the per-task loss
vector to a combiner. That is how PCGrad-style methods plug into any agent without subclassing
it: a combiner may compute per-task gradients of ``params`` and merge them however it likes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from mtrl.config import COMBINER_NAMES


class Combiner(Protocol):
    name: str

    def backward(self, task_losses: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Accumulate gradients of ``params`` from ``task_losses`` (shape ``[num_tasks]``)
        into their ``.grad`` fields."""
        ...


class MeanCombiner:
    """The standard multi-task objective: the gradient of the mean of the task losses."""

    name = "mean"

    def backward(self, task_losses: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        task_losses.mean().backward()


def make_combiner(name: str) -> Combiner:
    if name == "mean":
        return MeanCombiner()
    raise ValueError(f"unknown combiner {name!r}; allowed: {', '.join(COMBINER_NAMES)}")
