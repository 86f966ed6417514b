"""MOORE: a mixture of orthogonal experts (Hendawy, Peters & D'Eramo, ICLR 2024, "Multi-Task
Reinforcement Learning with Mixture of Orthogonal Experts", Sec. 4).

Per state ``s`` (an observation for the actor, ``[observation, action]`` for a critic):

1. ``k`` expert encoders ``h_1 … h_k`` (MLPs evaluated together as one stacked ``[k, in, out]``
   chain, the last layer linear) give the representations ``U_s = [u_1 … u_k] ∈ R^{k×d}``.
2. The Gram-Schmidt process orthonormalizes them, ``V_s = GS(U_s)`` (the paper's Eq. 2), so that
   ``V_s`` lies on the Stiefel manifold, ``V_s V_sᵀ = I_k`` (the constraint of Eq. 1 of the SC-MDP
   formulation, Definition 4.2): the experts are forced to span ``k`` different directions.
3. Task ``c`` mixes the orthonormal basis with its own weights ``w_c ∈ R^k``,
   ``v_c = w_cᵀ V_s`` (Sec. 4.2; Fig. 1). As in the paper's code the task weights are a linear
   layer without bias on the one-hot task, i.e. one free vector per task (no softmax and no tanh
   on ``w_c``), initialized Xavier-uniform.
4. ``tanh(v_c)`` goes into the output function ``f_θ``: on Meta-World the authors use one linear
   output layer per task (their ``MetaworldSACMixtureMH*`` networks, "MH": multi-head, with no
   hidden layers in the heads) for the actor and both critics; ``multihead=False`` uses one
   linear layer shared by all tasks instead. The tanh on the mixed representation is the
   authors' Meta-World setting (``--agg_activation Linear Tanh``: nothing before the mixing,
   tanh after it).

Sizes: like the authors' code (``--actor_n_features`` / ``--critic_n_features`` are the layer
sizes of each expert), every expert is an MLP with the network's ``hidden`` sizes
(``agent.actor_hidden`` / ``agent.critic_hidden``), ReLU between layers and the last layer
linear; ``hidden[-1]`` is the representation size ``d``. Their Meta-World runs use three
400-unit layers, 4 experts on MT10 and 6 on MT50 (the authors' run scripts and README).

Gram-Schmidt here is the *modified* variant (each projection is removed from the running
residual, which loses less orthogonality in float32 than the classical sum of projections and is
the same map in exact arithmetic), differentiable end to end, with a safe normalization

    v_i = r_i / sqrt(‖r_i‖² + ε²‖u_i‖² + δ²),   ε = 1e-4 (relative), δ = 1e-6 (absolute),

where ``r_i`` is what is left of ``u_i`` after removing its components along ``v_1 … v_{i−1}``.
Writing ``‖r_i‖ = sin θ_i ‖u_i‖`` (``θ_i``: the angle between ``u_i`` and the span of the earlier
experts), ``v_i`` is the unit vector up to a relative error of about ``ε²/(2 sin² θ_i)``: below
1e-5 for ``θ_i`` above 1.3° (and ``‖u_i‖ ≫ δ/ε``), so independent experts give orthonormal rows.
When ``u_i`` is nearly in the span of the earlier experts (``sin θ_i ≲ ε``; in float32 an exactly
dependent ``u_i`` leaves a rounding residual of about ``1e-7‖u_i‖``, whose direction is noise),
``v_i`` shrinks smoothly towards the zero vector (length ``sin θ_i / ε``, of order ``ε`` for an
exactly dependent expert, whose residual is then dominated by rounding and by the ``O(ε²)``
shortening of the earlier rows) instead of blowing that noise up to unit length: ``V_s`` then
has fewer than ``k`` effective directions, the expert contributes (almost) nothing, and the
gradient through the normalization stays bounded by ``1/(ε‖u_i‖)`` instead of growing like
``1/‖r_i‖``. Later rows are still orthonormalized against the full-length rows exactly (only
their overlap with the shrunken row, of the order of its length, is left). An all-zero expert
gives a zero row (``δ`` keeps the division finite) — never NaN or Inf. The guard is relative so
that it means the same at any scale of the expert outputs.
The authors' code divides by ``‖r_i‖`` without a guard (NaN for a zero residual).

Where mtrl differs from the paper's code: the experts and heads use PyTorch's default
``nn.Linear`` initialization (the authors use Xavier-uniform weights); the representation of a
state is computed once for all tasks in a batch and the per-task parts (``w_c``, the heads) are
applied with batched matmuls on task-stratified batches.

``report()`` gives, for the last training (stratified) forward, ``experts [T, k]``: each task's
``w_{c,i}² / ‖w_c‖²``, the fraction of ``‖v_c‖²`` that lies along orthonormal direction ``i``
(``V_s`` has orthonormal rows, so ``‖v_c‖² = Σ_i w_{c,i}²``) — a distribution over experts, like
the mixture weights of ``moe``, so that the runner's per-task entropy shows collapse onto one
expert (the signed ``w_c`` are in the checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mtrl.modules.mlp import EnsembleMLP
from mtrl.modules.nets import MultiHeadLinear, TaskNet

GS_EPS = 1e-4
"""Relative ε of the Gram-Schmidt normalization (see the module docstring)."""
GS_TINY = 1e-6
"""Absolute δ of the Gram-Schmidt normalization: only matters for an all-zero expert output."""


def gram_schmidt(u: torch.Tensor, eps: float = GS_EPS) -> torch.Tensor:
    """Orthonormalize the ``k`` rows of ``u [..., k, d]`` in order (modified Gram-Schmidt;
    MOORE's Eq. 2): row ``i`` of the result is ``u_i`` minus its components along rows
    ``0 … i−1``, divided by ``sqrt(‖·‖² + ε²‖u_i‖² + δ²)`` (module docstring). When ``k ≤ d``
    and ``u``'s rows are linearly independent, the rows of the result span the same space and
    are orthonormal up to a relative ``O(ε²/sin² θ_i)`` (``θ_i``: the angle between ``u_i`` and
    the span of the earlier rows); a row (nearly) in the span of the earlier ones comes out
    (nearly) zero. ``eps=0`` is the plain process. Differentiable."""
    k = u.shape[-2]
    rows: list[torch.Tensor] = []
    for i in range(k):
        r = u[..., i, :]
        floor = eps * eps * (r * r).sum(-1, keepdim=True) + GS_TINY * GS_TINY
        for v in rows:
            r = r - (r * v).sum(-1, keepdim=True) * v
        rows.append(r * torch.rsqrt((r * r).sum(-1, keepdim=True) + floor))
    return torch.stack(rows, dim=-2)


class TaskWeights(nn.Module):
    """One mixing vector ``w_c ∈ R^k`` per task (MOORE Sec. 4.2: a bias-free linear layer on the
    one-hot task), stored as ``weight [T, k]`` and initialized Xavier-uniform like that layer.
    Task ``c``'s row receives gradient only from task ``c``'s rows, so gradient combiners treat
    it as task-specific."""

    mtrl_task_specific = True

    def __init__(self, num_tasks: int, num_experts: int) -> None:
        super().__init__()
        self.num_tasks, self.num_experts = num_tasks, num_experts
        self.weight = nn.Parameter(torch.empty(num_tasks, num_experts))
        bound = math.sqrt(6.0 / (num_tasks + num_experts))
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, task_id: torch.Tensor, per_task: int | None = None) -> torch.Tensor:
        """``[B, k]``: row ``b`` is ``w_{task_id[b]}``."""
        if per_task is not None:
            return self.weight.unsqueeze(1).expand(-1, per_task, -1).reshape(-1, self.num_experts)
        return self.weight.index_select(0, task_id)

    def extra_repr(self) -> str:
        return f"tasks={self.num_tasks}, experts={self.num_experts}"


class MooreNet(TaskNet):
    """MOORE (Hendawy et al. 2024, Sec. 4; see the module docstring): ``k`` experts, each an MLP
    ``in_dim → hidden[0] → … → hidden[-1]`` → Gram-Schmidt (Eq. 2) → ``v_c = w_cᵀ V_s`` →
    ``tanh`` → a linear output layer (one per task with ``multihead``, as on Meta-World)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden: Sequence[int],
        *,
        num_experts: int = 4,
        multihead: bool = True,
        eps: float = GS_EPS,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"moore needs num_experts >= 1, got {num_experts}")
        if len(hidden) < 1:
            raise ValueError("moore needs at least one hidden size: the experts' layers, the "
                             "last one being the representation size")
        rep = hidden[-1]
        if num_experts > rep:
            raise ValueError(f"{num_experts} orthonormal experts need a representation of at "
                             f"least {num_experts} units (the last hidden size), got {rep}")
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.num_experts, self.multihead, self.eps = num_experts, multihead, eps
        self.experts = EnsembleMLP(num_experts, in_dim, list(hidden[:-1]), rep)
        self.task_weights = TaskWeights(num_tasks, num_experts)
        self.head: nn.Module = (MultiHeadLinear(num_tasks, rep, out_dim) if multihead
                                else nn.Linear(rep, out_dim))
        self._last: torch.Tensor | None = None

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """``V_s [B, k, d]``: the orthonormalized expert representations of each row."""
        return gram_schmidt(self.experts(x).transpose(0, 1), self.eps)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        w = self.task_weights(task_id, per_task)
        z = torch.tanh(torch.einsum("bk,bkd->bd", w, self.basis(x)))
        if per_task is not None:
            self._last = self.task_weights.weight.detach().clone()
        if self.multihead:
            return self.head(z, task_id, per_task)
        return self.head(z)

    def report(self) -> dict[str, torch.Tensor]:
        if self._last is None:
            return {}
        w = self._last
        share = w.square() / w.square().sum(-1, keepdim=True).clamp_min(1e-12)
        return {"experts": share}
