"""Closed forms of the distributions mtrl's policies use (categorical from logits, diagonal
Gaussian), as plain functions: no ``torch.distributions`` objects, so no argument validation
(host synchronization) on the hot path."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(x; μ, σ²)`` of a diagonal Gaussian, summed over dimensions, ``[B]``."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor,
                log_std_q: torch.Tensor) -> torch.Tensor:
    """``KL(N_p ‖ N_q)`` of diagonal Gaussians, summed over dimensions, ``[B]``:
    ``Σ_d log σ_q − log σ_p + (σ_p² + (μ_p − μ_q)²) / (2 σ_q²) − ½``. It is also the KL of the
    tanh-squashed distributions (KL is invariant under the bijection tanh)."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    diff = (mean_p - mean_q) * torch.exp(-log_std_q)
    return (log_std_q - log_std_p + 0.5 * (var_ratio + diff.pow(2)) - 0.5).sum(-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """``KL(p ‖ q) = Σ_a p(a) (log p(a) − log q(a))`` of two categoricals given by logits,
    per row ``[B]``."""
    logp = F.log_softmax(logits_p, dim=-1)
    logq = F.log_softmax(logits_q, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def categorical_log_prob(logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[a]`` per row, ``[B]``."""
    return F.log_softmax(logits, dim=-1).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)


def categorical_sample(logits: torch.Tensor) -> torch.Tensor:
    """An index per row drawn from ``softmax(logits)`` by the Gumbel-max trick
    (``argmax(logits + Gumbel noise)``): no host synchronization, unlike ``multinomial``."""
    u = torch.rand_like(logits).clamp_(1e-20, 1.0)
    return (logits - torch.log(-torch.log(u))).argmax(-1)
