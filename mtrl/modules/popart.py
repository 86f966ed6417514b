"""PopArt: adaptive, output-preserving normalization of value targets, one scale per task.

van Hasselt et al. 2016, "Learning values across many orders of magnitude" (NeurIPS),
Algorithm 1; multi-task form from Hessel et al. 2019, "Multi-task Deep Reinforcement Learning
with PopArt" (AAAI), Sec. 3.

Per task ``k`` the learner keeps running moments of its value targets ``y``,

    μ_k ← (1 − β) μ_k + β E[y],     ν_k ← (1 − β) ν_k + β E[y²],     σ_k = √(ν_k − μ_k²),

and the network's value head predicts *normalized* values ``n_k(h) = w_kᵀ h + b_k``; the
unnormalized prediction is ``σ_k n_k + μ_k``. When the statistics move from (μ, σ) to
(μ', σ'), the head is rescaled so that every unnormalized output is unchanged ("Preserving
Outputs Precisely", van Hasselt et al. 2016, Eq. 8–9 / Algorithm 1, line 6):

    w'_k = (σ_k / σ'_k) w_k,        b'_k = (σ_k b_k + μ_k − μ'_k) / σ'_k.

The value loss is taken on normalized targets ``(y − μ'_k)/σ'_k`` — with the statistics that
already include this batch (the order of Algorithm 1: targets → statistics → rescale → loss),
so nothing is normalized with stale statistics. Learners using PopArt follow that order:

1. compute the targets ``y`` (unnormalized) with the current statistics;
2. ``old_mu, old_sigma, new_mu, new_sigma = stats.update(y)``;
3. ``preserve_outputs_(head.weight, head.bias, ...)`` for *every* head that uses ``stats``
   (online and target networks, twin critics);
4. loss on ``stats.normalize(y)`` against the heads' normalized outputs.

σ is clamped to ``[sigma_min, sigma_max]``, so a task whose targets are constant (ν = μ²) gives a
finite σ instead of 0 or NaN. With ``debias`` the step size of the ``t``-th update is
``β / (1 − (1 − β)^t)`` (the correction Adam applies to its moments), so the first update sets
μ and ν to the first batch's moments instead of dragging them from the arbitrary initial values.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PopArtStatistics(nn.Module):
    """Per-task running first and second moments of value targets (buffers: ``mu``, ``nu``,
    ``count``), so they travel with ``state_dict`` and checkpoints. No host synchronization."""

    mu: torch.Tensor
    nu: torch.Tensor
    count: torch.Tensor

    def __init__(
        self,
        num_tasks: int,
        beta: float = 3e-4,
        *,
        sigma_min: float = 1e-4,
        sigma_max: float = 1e6,
        debias: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta={beta} must be in (0, 1]")
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        self.num_tasks = num_tasks
        self.beta = beta
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.debias = debias
        self.register_buffer("mu", torch.zeros(num_tasks))
        self.register_buffer("nu", torch.ones(num_tasks))
        self.register_buffer("count", torch.zeros(num_tasks))

    @property
    def sigma(self) -> torch.Tensor:
        var = (self.nu - self.mu.pow(2)).clamp(self.sigma_min**2, self.sigma_max**2)
        return var.sqrt()

    @torch.no_grad()
    def update(
        self, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Take one batch of targets, task-stratified ``[num_tasks, n]`` (row k: task k).
        Returns ``(old_mu, old_sigma, new_mu, new_sigma)`` for :func:`preserve_outputs_`."""
        if targets.dim() != 2 or targets.shape[0] != self.num_tasks:
            raise ValueError(
                f"targets must have shape [num_tasks={self.num_tasks}, n], got "
                f"{tuple(targets.shape)}"
            )
        old_mu, old_sigma = self.mu.clone(), self.sigma
        y = targets.to(self.mu.dtype)
        self.count.add_(1.0)
        if self.debias:
            beta = self.beta / (1.0 - (1.0 - self.beta) ** self.count)
        else:
            beta = torch.full_like(self.mu, self.beta)
        self.mu.lerp_(y.mean(1), beta)
        self.nu.lerp_(y.pow(2).mean(1), beta)
        return old_mu, old_sigma, self.mu.clone(), self.sigma

    def normalize(self, y: torch.Tensor) -> torch.Tensor:
        """``(y − μ_k)/σ_k`` for task-stratified ``y [num_tasks, n]``."""
        return (y - self.mu[:, None]) / self.sigma[:, None]

    def denormalize(self, n: torch.Tensor) -> torch.Tensor:
        """``σ_k n + μ_k`` for task-stratified ``n [num_tasks, n]``."""
        return n * self.sigma[:, None] + self.mu[:, None]

    def normalize_ids(self, y: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``(y − μ)/σ`` per row for ``y [..., B]`` and ``task_id [B]``."""
        return (y - self.mu.index_select(0, task_id)) / self.sigma.index_select(0, task_id)

    def denormalize_ids(self, n: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``σ n + μ`` per row for ``n [..., B]`` and ``task_id [B]``."""
        return n * self.sigma.index_select(0, task_id) + self.mu.index_select(0, task_id)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, beta={self.beta}, debias={self.debias}"


@torch.no_grad()
def preserve_outputs_(
    weight: torch.Tensor,
    bias: torch.Tensor,
    old_mu: torch.Tensor,
    old_sigma: torch.Tensor,
    new_mu: torch.Tensor,
    new_sigma: torch.Tensor,
) -> None:
    """Rescale a per-task linear value layer in place so that ``σ n + μ`` is unchanged:
    ``W' = σ/σ' · W``, ``b' = (σ b + μ − μ')/σ'`` (van Hasselt et al. 2016, Algorithm 1).
    ``weight``: ``[num_tasks, in]``; ``bias``: ``[num_tasks]``."""
    ratio = old_sigma / new_sigma
    weight.mul_(ratio[:, None])
    bias.mul_(old_sigma).add_(old_mu - new_mu).div_(new_sigma)


class TaskValueHead(nn.Module):
    """One linear output per task: ``v_k(h) = w_kᵀ h + b_k`` with ``weight [T, in]`` and
    ``bias [T]``, evaluated per row by gathering the row's task, so task ``k``'s parameters get
    gradient only from task ``k``'s rows. Marked task-specific: gradient combiners leave it
    alone. PopArt rescales exactly this kind of layer (Hessel et al. 2019)."""

    mtrl_task_specific = True

    def __init__(self, in_features: int, num_tasks: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tasks, in_features))
        self.bias = nn.Parameter(torch.empty(num_tasks))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        w = self.weight.index_select(0, task_id)
        return (h * w).sum(-1) + self.bias.index_select(0, task_id)


class PopArtValueHead(TaskValueHead):
    """A :class:`TaskValueHead` with its PopArt statistics: ``forward`` gives normalized
    values, :meth:`unnormalized` gives ``σ n + μ``. ``stats`` may be shared with other heads
    (e.g. a target network's); whoever updates it must rescale all of them
    (:func:`preserve_outputs_`)."""

    def __init__(
        self, in_features: int, num_tasks: int, stats: PopArtStatistics | None = None,
        beta: float = 3e-4,
    ) -> None:
        super().__init__(in_features, num_tasks)
        self.stats = stats if stats is not None else PopArtStatistics(num_tasks, beta)
        if self.stats.num_tasks != num_tasks:
            raise ValueError("statistics and head have different task counts")

    def unnormalized(self, h: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        return self.stats.denormalize_ids(self(h, task_id), task_id)

    def update_statistics(self, targets: torch.Tensor) -> torch.Tensor:
        """Update the statistics with task-stratified ``targets [T, n]``, rescale this head to
        preserve its outputs, and return the targets normalized with the new statistics."""
        old_mu, old_sigma, new_mu, new_sigma = self.stats.update(targets)
        preserve_outputs_(self.weight, self.bias, old_mu, old_sigma, new_mu, new_sigma)
        return self.stats.normalize(targets)
