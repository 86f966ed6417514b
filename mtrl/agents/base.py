"""What every agent shares: the shape of a policy's output."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class PolicyOutput:
    """A policy's distribution parameters for a batch of observations.

    ``logits``: discrete ``[B, A]`` action preferences (policy logits, or Q-values for a
    Q-network). ``mean`` / ``log_std``: continuous ``[B, D]`` Gaussian parameters (pre-tanh for
    squashed policies). ``features``: the policy's penultimate features ``[B, F]`` (what
    Actor-Mimic regresses onto), or None."""

    logits: Tensor | None = None
    mean: Tensor | None = None
    log_std: Tensor | None = None
    features: Tensor | None = None
