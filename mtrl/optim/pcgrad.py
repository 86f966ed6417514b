"""PCGrad: gradient surgery for multi-task learning.

Yu et al. 2020, "Gradient Surgery for Multi-Task Learning" (NeurIPS), Algorithm 1. For every
task ``i``, start from ``g_i^PC = g_i`` and, for the other tasks ``j ≠ i`` in a random order,
if ``g_i^PC · g_j < 0`` project ``g_i^PC`` onto the normal plane of ``g_j``:

    g_i^PC ← g_i^PC − (g_i^PC · g_j) / ‖g_j‖² · g_j            (Eq. 1 / Alg. 1, line 6)

and finally apply ``Δθ = Σ_i g_i^PC`` to the shared parameters.

Every ``g_i^PC`` stays a linear combination ``Σ_m C[i, m] g_m`` of the original task gradients,
and every dot product the algorithm needs is ``g_i^PC · g_j = Σ_m C[i, m] (g_m · g_j)``: a row of
``C`` times a column of the Gram matrix ``G Gᵀ``. So the whole surgery runs on ``T × T``
matrices, and the update is ``Σ_m w_m g_m`` with ``w = Σ_i C[i, :]`` — one weighted sum of the
per-task gradients instead of ``T²`` operations on parameter-sized vectors. The loop over the
``T − 1`` projection rounds is vectorized over ``i`` (all tasks take their ``t``-th partner at
once), on the device, with no host synchronization.
"""

from __future__ import annotations

import torch


def random_orders(num_tasks: int, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``[T, T − 1]``: row ``i`` is a uniformly random permutation of the tasks other than
    ``i`` (the order in which task ``i`` visits its partners)."""
    keys = torch.rand(num_tasks, num_tasks, device=device, generator=generator)
    keys.fill_diagonal_(2.0)  # sorts last, then dropped
    return keys.argsort(dim=1)[:, : num_tasks - 1]


def pcgrad_coefficients(gram: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The matrix ``C`` with ``g_i^PC = Σ_m C[i, m] g_m`` after Algorithm 1.

    ``gram``: ``[T, T]`` Gram matrix of the task gradients; ``orders``: ``[T, T − 1]`` from
    :func:`random_orders`. Computed in float64: the coefficients are cheap and the projections
    of near-parallel gradients are sensitive to rounding.
    """
    num_tasks = gram.shape[0]
    g = gram.to(torch.float64)
    c = torch.eye(num_tasks, dtype=torch.float64, device=gram.device)
    rows = torch.arange(num_tasks, device=gram.device)
    sq_norm = g.diagonal().clamp_min(torch.finfo(torch.float64).tiny)
    for t in range(orders.shape[1]):
        j = orders[:, t]
        dots = (c * g.index_select(1, j).T).sum(1)  # g_i^PC · g_{j_i}
        coef = dots.clamp(max=0.0) / sq_norm.index_select(0, j)
        c[rows, j] -= coef
    return c


def pcgrad_weights(gram: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """``w`` with ``Σ_i g_i^PC = Σ_m w[m] g_m`` (float64, ``[T]``)."""
    return pcgrad_coefficients(gram, orders).sum(0)


def conflict_fraction(gram: torch.Tensor) -> torch.Tensor:
    """Fraction of task pairs ``i < j`` whose gradients conflict (``g_i · g_j < 0``)."""
    num_tasks = gram.shape[0]
    if num_tasks < 2:
        return torch.zeros((), device=gram.device)
    iu = torch.triu_indices(num_tasks, num_tasks, offset=1, device=gram.device)
    return (gram[iu[0], iu[1]] < 0).float().mean()


def cosine_matrix(gram: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities of the task gradients from their Gram matrix (0 where a
    task's gradient is zero)."""
    norm = gram.diagonal().clamp_min(0).sqrt()
    denom = torch.outer(norm, norm)
    return torch.where(denom > 0, gram / denom.clamp_min(1e-30), torch.zeros_like(gram))
