"""PopArt: adaptive, output-preserving normalization of value targets, one scale per task.

References
----------
* van Hasselt, Guez, Hessel, Mnih, Silver 2016, "Learning values across many orders of
  magnitude" (NeurIPS; arXiv:1602.07714): Sec. 2 ("Adaptive normalization with Pop-Art"),
  Sec. 2.1 ("Preserving outputs precisely") and Algorithm 1 ("SGD on squared loss with Pop-Art").
* Hessel, Soyer, Espeholt, Czarnecki, Schmitt, van Hasselt 2019, "Multi-task Deep Reinforcement
  Learning with PopArt" (AAAI; arXiv:1809.04474): one set of statistics per task and the
  scale-invariant updates ("PopArt for multi-task RL").

The method
----------
Per task ``k`` the learner tracks running moments of its (unnormalized) value targets ``y``,

    μ_k ← (1 − β) μ_k + β E[y],      ν_k ← (1 − β) ν_k + β E[y²],      σ_k = √(ν_k − μ_k²),

and the network's value head predicts *normalized* values ``n_k(h) = w_kᵀ h + b_k``; the
unnormalized prediction is ``σ_k n_k + μ_k`` (van Hasselt et al. 2016, Sec. 2). When the
statistics move from (μ, σ) to (μ', σ') the head is rescaled so that every unnormalized output
stays exactly what it was ("POP", Sec. 2.1 / Algorithm 1):

    w'_k = (σ_k / σ'_k) w_k,        b'_k = (σ_k b_k + μ_k − μ'_k) / σ'_k.

The value loss is then taken in normalized space, so its gradient has the same scale for every
task whatever its reward magnitude (Hessel et al. 2019, scale-invariant updates); a policy loss
built on unnormalized values can be divided by σ_k for the same reason.

Order of operations in a learner
--------------------------------
Algorithm 1 of van Hasselt et al. 2016, one step per batch:

1. compute the unnormalized targets ``y`` (e.g. ``r + γ·(σ n'_target + μ)``) with the
   *current* statistics;
2. ``update = stats.update(y)``  — (μ, σ) → (μ', σ'), now including this batch;
3. rescale *every* head that reads these statistics (twin critics, their target copies) with
   ``update``: :func:`popart_update_` does 2 and 3 together;
4. loss on the normalized targets ``(y − μ')/σ'`` (``stats.normalize(y)``) against the heads'
   normalized outputs, then the optimizer step.

Normalizing ``y`` with the pre-update (μ, σ) instead would regress the rescaled heads, which
already speak in (μ', σ') units, onto targets in stale units.

Target networks: a target head that shares the statistics must be rescaled in step 3 like the
online one. Polyak averaging afterwards is consistent with that, because the rescaling is the
same affine map for both copies and an affine map commutes with a convex combination. Optimizer
state (e.g. Adam's moments) is not rescaled, as in the papers.

Numerics: σ is clamped to ``[sigma_min, sigma_max]``, so a task whose targets are constant
(ν − μ² = 0, or slightly negative after rounding) gets σ = ``sigma_min`` rather than 0 or NaN,
and ``sigma_min`` bounds the factor by which one update can blow up a head's weights. ν is a raw
second moment, so in float32 ``ν − μ²`` loses the variance when ``|μ|/σ`` exceeds ~10³; keep the
statistics in float64 (``stats.double()``) for such targets. Nothing here calls ``.item()`` or
otherwise synchronizes with the host.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import nn


class PopArtUpdate(NamedTuple):
    """Statistics before and after one :meth:`PopArtStatistics.update`, each ``[num_tasks]``.
    A plain tuple too: ``preserve_outputs_(w, b, *update)``."""

    old_mu: torch.Tensor
    old_sigma: torch.Tensor
    new_mu: torch.Tensor
    new_sigma: torch.Tensor


class PopArtStatistics(nn.Module):
    """Per-task running moments of value targets (Hessel et al. 2019: one μ, ν per task).

    Buffers (so they travel with ``state_dict`` and checkpoints): ``mu`` and ``nu`` ``[T]`` in
    the module's float dtype, initialized to 0 and 1 (σ = 1: the heads start as plain value
    heads), and ``count`` ``[T]`` (int64), the number of updates each task has had.

    ``debias``: with a small β the moments start out dragged towards their arbitrary initial
    values (μ = 0, ν = 1) for ~1/β updates. As Adam does for its moment estimates, the ``t``-th
    update then uses the step size ``β_t = β / (1 − (1 − β)^t)``: ``β_1 = 1`` (the first update
    takes the first batch's moments exactly), and ``β_t → β``. The result is the exponentially
    weighted average of the batch moments seen so far with weights normalized to sum to one,
    i.e. the initial values are forgotten completely. With ``debias=False`` the plain
    ``(1 − β)`` recursion of van Hasselt et al. 2016 is used.
    """

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
        if num_tasks < 1:
            raise ValueError(f"num_tasks={num_tasks} must be >= 1")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta={beta} must be in (0, 1]")
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.num_tasks = num_tasks
        self.beta = beta
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.debias = debias
        # log(1 − β) once, in double precision: 1 − (1 − β)^t is then computed as
        # −expm1(t·log1p(−β)), which stays accurate for tiny β where 1 − 0.9997^t in float32
        # would cancel catastrophically.
        self._log1m_beta = math.log1p(-beta) if beta < 1.0 else -math.inf
        self.register_buffer("mu", torch.zeros(num_tasks))
        self.register_buffer("nu", torch.ones(num_tasks))
        # int64: exact for any realistic number of updates, and untouched by .double()/.half().
        self.register_buffer("count", torch.zeros(num_tasks, dtype=torch.long))

    @property
    def sigma(self) -> torch.Tensor:
        """``√clamp(ν − μ², σ_min², σ_max²)`` per task, ``[T]``; finite and > 0 even when the
        variance estimate is 0 or negative from rounding (the clamp comes before the root)."""
        var = (self.nu - self.mu.square()).clamp(self.sigma_min**2, self.sigma_max**2)
        return var.sqrt()

    def step_sizes(self) -> torch.Tensor:
        """Step size each task's *next* update will use, ``[T]``."""
        if not self.debias:
            return torch.full_like(self.mu, self.beta)
        t = (self.count + 1).to(self.mu.dtype)
        beta_t = self.beta / -torch.expm1(t * self._log1m_beta)
        # β_1 = 1 exactly (the formula can round to 1 ± ulp); lerp with weight 1 returns the
        # end point exactly, so the first update copies the batch moments bit for bit.
        return torch.where(t <= 1, torch.ones_like(beta_t), beta_t)

    @torch.no_grad()
    def update(self, targets: torch.Tensor, active: torch.Tensor | None = None) -> PopArtUpdate:
        """Fold one batch of unnormalized targets into the statistics.

        ``active`` (bool ``[T]``, optional): only these tasks are updated; the others keep
        their statistics and their update count (e.g. tasks whose targets carry no signal yet).

        ``targets``: ``[num_tasks, n]``, task-stratified (row ``k`` holds task ``k``'s ``n``
        targets), so the per-task means are row means and nothing needs gathering. Every task
        is updated every call. Returns (μ, σ) before and after, for :func:`preserve_outputs_`;
        the returned tensors are copies and do not change with later updates.
        """
        if targets.dim() != 2 or targets.shape[0] != self.num_tasks:
            raise ValueError(
                f"targets must have shape [num_tasks={self.num_tasks}, n], got "
                f"{tuple(targets.shape)}"
            )
        old_mu, old_sigma = self.mu.clone(), self.sigma
        y = targets.to(self.mu.dtype)
        beta = self.step_sizes()
        if active is not None:
            beta = torch.where(active, beta, torch.zeros_like(beta))
        # lerp_(end, w) = self + w·(end − self) = (1 − w)·self + w·end.
        self.mu.lerp_(y.mean(1), beta)
        self.nu.lerp_(y.square().mean(1), beta)
        self.count.add_(1 if active is None else active.long())
        return PopArtUpdate(old_mu, old_sigma, self.mu.clone(), self.sigma)

    def normalize(self, y: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        """``(y − μ_k)/σ_k``. Without ``task_id``: task-stratified ``y [num_tasks, n]`` (row k
        is task k). With ``task_id [B]``: a flat batch ``y [..., B]``."""
        if task_id is not None:
            return self.normalize_ids(y, task_id)
        return (y - self.mu[:, None]) / self.sigma[:, None]

    def denormalize(self, n: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        """``σ_k n + μ_k``; layouts as in :meth:`normalize`."""
        if task_id is not None:
            return self.denormalize_ids(n, task_id)
        return n * self.sigma[:, None] + self.mu[:, None]

    def normalize_ids(self, y: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``(y − μ)/σ`` per element for ``y [..., B]`` and ``task_id [B]`` (int64)."""
        return (y - self.mu.index_select(0, task_id)) / self.sigma.index_select(0, task_id)

    def denormalize_ids(self, n: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``σ n + μ`` per element for ``n [..., B]`` and ``task_id [B]`` (int64)."""
        return n * self.sigma.index_select(0, task_id) + self.mu.index_select(0, task_id)

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, beta={self.beta}, sigma_min={self.sigma_min}, "
            f"sigma_max={self.sigma_max}, debias={self.debias}"
        )


@torch.no_grad()
def preserve_outputs_(
    weight: torch.Tensor,
    bias: torch.Tensor,
    old_mu: torch.Tensor,
    old_sigma: torch.Tensor,
    new_mu: torch.Tensor,
    new_sigma: torch.Tensor,
) -> None:
    """Rescale one per-task linear value layer in place so that ``σ n + μ`` is unchanged
    (van Hasselt et al. 2016, Sec. 2.1 "Preserving outputs precisely", Algorithm 1):

        W' = (σ/σ') · W,        b' = (σ b + μ − μ') / σ'        (per task / row).

    ``weight``: ``[num_tasks, in]`` (or ``[num_tasks]``), ``bias``: ``[num_tasks]``; the
    statistics ``[num_tasks]``. Stateless: call it once per layer that reads the statistics
    (all layers get the same map, so any number of twins/target copies stay consistent).
    Runs under ``no_grad`` and writes into the given tensors, so the parameter objects that
    optimizers hold stay the same.
    """
    if weight.shape[0] != old_sigma.shape[0] or bias.shape != old_sigma.shape:
        raise ValueError(
            f"weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not match "
            f"{old_sigma.shape[0]} tasks"
        )
    ratio = old_sigma / new_sigma
    weight.mul_(ratio.view(-1, *([1] * (weight.dim() - 1))))
    # (σ b + μ − μ')/σ' = ratio·b + (μ − μ')/σ'
    bias.mul_(ratio).add_((old_mu - new_mu) / new_sigma)


class TaskValueHead(nn.Module):
    """One scalar linear output per task: ``v_k(h) = w_kᵀ h + b_k``, with ``weight [T, in]`` and
    ``bias [T]`` initialized like ``nn.Linear`` (uniform ±1/√in). Each row of the batch is
    evaluated with its own task's parameters (gathered by ``task_id``), so task ``k``'s row of
    the weight and ``bias[k]`` get gradient only from task ``k``'s samples. Marked
    task-specific, so gradient combiners leave it alone. This is the layer PopArt rescales; it
    holds no statistics itself (see :class:`PopArtHead`)."""

    mtrl_task_specific = True

    def __init__(self, in_features: int, num_tasks: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_tasks = num_tasks
        self.weight = nn.Parameter(torch.empty(num_tasks, in_features))
        self.bias = nn.Parameter(torch.empty(num_tasks))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``h [B, in]``, ``task_id [B]`` (int64) → ``[B]``."""
        w = self.weight.index_select(0, task_id)
        return (h * w).sum(-1) + self.bias.index_select(0, task_id)

    def preserve_outputs_(self, update: PopArtUpdate) -> None:
        """Apply :func:`preserve_outputs_` to this head's weight and bias."""
        preserve_outputs_(self.weight, self.bias, *update)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_tasks={self.num_tasks}"


@torch.no_grad()
def popart_update_(
    stats: PopArtStatistics, targets: torch.Tensor, heads: Iterable[TaskValueHead],
    active: torch.Tensor | None = None,
) -> PopArtUpdate:
    """Steps 2–3 of the learner order (module docstring): update ``stats`` once with the
    task-stratified ``targets [T, n]`` and rescale every head in ``heads`` output-preservingly.

    ``heads`` must be *all* the heads whose outputs are read through ``stats`` (e.g. both twin
    critics and both target critics); a head left out would silently change its unnormalized
    outputs. A :class:`PopArtHead` in ``heads`` must hold this very ``stats`` object.
    """
    heads = list(heads)
    for head in heads:
        if isinstance(head, PopArtHead) and head.stats is not stats:
            raise ValueError("a PopArtHead in `heads` uses a different statistics object")
    update = stats.update(targets, active)
    for head in heads:
        head.preserve_outputs_(update)
    return update


class PopArtHead(TaskValueHead):
    """A :class:`TaskValueHead` together with the PopArt statistics it is read through.

    ``forward(h, task_id)`` gives the *normalized* values ``n`` ``[B]`` (train these against
    ``stats.normalize(y)``), :meth:`unnormalized` gives ``σ_k n + μ_k``.

    Statistics: by default the head creates and owns a :class:`PopArtStatistics` (``beta``,
    ``sigma_min``, ``sigma_max``, ``debias`` are passed on). Several heads can share one object
    by passing ``stats=`` (twin critics, target critics)::

        stats = PopArtStatistics(T)
        q1, q2 = PopArtHead(d, T, stats=stats), PopArtHead(d, T, stats=stats)
        q1_t, q2_t = copy.deepcopy(q1), copy.deepcopy(q2)
        q1_t.stats = q2_t.stats = stats      # deepcopy copied the statistics: re-tie them
        ...
        y = ...  # [T, n] unnormalized targets (from q1_t/q2_t.unnormalized); h, tid: the
                 # batch's features and task ids, rows ordered task by task like y.view(-1)
        popart_update_(stats, y, [q1, q2, q1_t, q2_t])
        y_n = stats.normalize(y).view(-1)       # targets in the *new* units
        loss = (q1(h, tid) - y_n).pow(2).mean() + (q2(h, tid) - y_n).pow(2).mean()

    The statistics are a submodule of every head holding them, so each head's ``state_dict``
    contains them (for shared statistics the same tensors several times, which loads fine).
    """

    def __init__(
        self,
        in_features: int,
        num_tasks: int,
        *,
        stats: PopArtStatistics | None = None,
        beta: float = 3e-4,
        sigma_min: float = 1e-4,
        sigma_max: float = 1e6,
        debias: bool = True,
    ) -> None:
        super().__init__(in_features, num_tasks)
        if stats is None:
            stats = PopArtStatistics(
                num_tasks, beta, sigma_min=sigma_min, sigma_max=sigma_max, debias=debias
            )
        elif stats.num_tasks != num_tasks:
            raise ValueError(f"statistics have {stats.num_tasks} tasks, the head {num_tasks}")
        self.stats = stats

    def unnormalized(self, h: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``σ_k n_k(h) + μ_k`` per row, ``[B]``."""
        return self.stats.denormalize_ids(self(h, task_id), task_id)
