"""Random loss weighting ("rlw") for mtrl: a gradient-combiner plug-in.

Lin, Ye, Xu, Shi & Zhang (2022), "Reasonable Effectiveness of Random Weighting: A Litmus Test
for Multi-Task Learning", TMLR: at every update the task losses are weighted by
``w = softmax(z)``, ``z ~ N(0, I)`` — no learned state, and a baseline that learned loss
weightings have to beat.

    mtrl train toy-mtsac --plugin examples/rlw_combiner.py --agent.critic-combiner rlw
"""

from __future__ import annotations

import torch

import mtrl
from mtrl.optim.combiners import GradientCombiner


class RandomLossWeighting(GradientCombiner):
    """The objective ``Σ_k w_k L_k`` with ``w = softmax(z)``, ``z ~ N(0, I_T)`` drawn anew at
    each update from torch's global generator (which mtrl seeds and checkpoints). mtrl's
    combiners minimize ``(1/T) Σ_k λ_k L_k``, so ``λ = T·w`` (``mean`` in expectation)."""

    name = "rlw"

    def __init__(self, diagnostics_every: int = 0) -> None:
        super().__init__(diagnostics_every)
        self.weights: torch.Tensor | None = None  # the last w: positive, sums to 1

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        z = torch.randn(task_losses.shape, device=task_losses.device, dtype=task_losses.dtype)
        self.weights = torch.softmax(z, dim=0)
        return task_losses.shape[0] * self.weights

    def extra_report(self) -> dict[str, torch.Tensor]:  # logged as combiner/<net>/weight/<task>
        return {} if self.weights is None else {"weight": len(self.weights) * self.weights}


mtrl.register_combiner("rlw", lambda cfg: RandomLossWeighting(cfg.diagnostics_every))
