"""PaCo: parameter-compositional multi-task networks.

Sun, Zhang, Xu & Tomizuka 2022, "PaCo: Parameter-Compositional Multi-Task Reinforcement
Learning" (NeurIPS; code: TToTMooN/paco-mtrl). A shared parameter set
``Φ = [φ_1, …, φ_K]`` holds ``K`` full copies of a network's parameters, and every task ``τ``
has a compositional vector ``w_τ ∈ R^K``; task ``τ``'s network is the ordinary network with the
parameters

    θ_τ = Φ w_τ = Σ_k w_τk φ_k.

The tasks' networks thus lie in the K-dimensional subspace spanned by Φ. Trained end to end on
the multi-task objective ``Σ_τ J(θ_τ)``, ``Φ`` receives gradient from every task and ``w_τ``
only from task ``τ`` (the paper's Fig. 2): ``w`` is a task-specific parameter
(``mtrl_task_specific``), ``Φ`` a shared one. ``w`` is free (no simplex or norm constraint)
and, as in the authors' code, drawn from N(0, I); see :class:`CompositionalVectors`.

Every layer is compositional, the output layer included, in the actor and in each critic (the
authors' ``use_compositional_encoding`` for both; their projection heads are compositional
too). The network sees the observation only: the task enters through ``w_τ`` alone (their
``use_task_input=False``).

Computation: a layer's weight for task ``τ`` is ``W_τ = Σ_k w_τk W_k``. On a task-stratified
batch (``per_task = n``, rows task-major) each layer builds the ``T`` task weights once with one
``[T, K] @ [K, in·out]`` matmul and applies them with one ``baddbmm`` on the ``[T, n, in]`` view
— the cost of ``T`` ordinary layers plus a ``K/n`` fraction. With arbitrary task ids (acting,
evaluation) each row mixes the ``K`` copies' outputs with its own ``w``:
``y_i = Σ_k w_{τ(i)k} (x_i W_k + b_k)``, identical to ``x_i W_τ(i) + b_τ(i)`` but with
``[B, K, out]`` memory instead of a ``[B, in, out]`` weight per row.

Where mtrl differs: each network (the actor, every critic member) has its own ``W``; the
authors' code feeds one task-encoding layer to the actor and the critics (and the target
critics) alike. Gradient combiners that need per-task gradients of the shared parameters
(PCGrad, and the gradient diagnostics every ``agent.combiner.diagnostics_every`` updates) get
those of Φ from the generic vmapped backward of :mod:`mtrl.optim.task_grads` (``T`` backward
passes' worth of work), since Φ is not made of ``nn.Linear`` layers.

The stability mechanism of the paper (loss maskout and w-reset) lives in the gradient combiner
``paco-maskout`` (:class:`mtrl.optim.combiners.PaCoMaskoutCombiner`), which schedules resets
with :meth:`CompositionalVectors.schedule_reset`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from mtrl.modules.nets import TaskNet

#: How :meth:`CompositionalVectors.schedule_reset` re-initializes ``w_τ`` (the authors'
#: ``reset_task_method``): ``interpolate`` a random convex combination of the kept tasks'
#: vectors, ``copy`` the vector of one kept task chosen at random.
RESET_METHODS = ("interpolate", "copy")


class CompositionalLinear(nn.Module):
    """One layer of the shared parameter set: ``K`` linear layers ``(W_k [in, out], b_k [out])``
    stacked as ``weight [K, in, out]`` and ``bias [K, out]``, used only through a compositional
    vector (``W_τ = Σ_k w_τk W_k``, ``b_τ = Σ_k w_τk b_k``).

    Initialization: weights uniform in ±1/√in (PyTorch's ``nn.Linear`` bound, and the authors'
    variance-scaling initializer with gain √(1/3)), biases zero (the authors'
    ``CompositionalFC``). With ``identical_init`` the ``K`` copies start equal (the authors'
    ``kernel_identical_init=True``); otherwise each copy is drawn independently (Meta-World+'s
    reimplementation)."""

    def __init__(self, num_params: int, in_features: int, out_features: int,
                 identical_init: bool = True) -> None:
        super().__init__()
        self.num_params, self.in_features, self.out_features = (num_params, in_features,
                                                                out_features)
        self.weight = nn.Parameter(torch.empty(num_params, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_params, out_features))
        bound = 1.0 / math.sqrt(in_features)
        with torch.no_grad():
            if identical_init:
                first = torch.empty(in_features, out_features).uniform_(-bound, bound)
                self.weight.copy_(first.expand_as(self.weight))
            else:
                self.weight.uniform_(-bound, bound)

    def task_weights(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Σ_k w_k W_k [N, in, out], Σ_k w_k b_k [N, out])`` for vectors ``w [N, K]``."""
        k = self.num_params
        weight = (w @ self.weight.reshape(k, -1)).view(-1, self.in_features, self.out_features)
        return weight, w @ self.bias

    def stratified(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x [T, n, in]`` (task-major blocks) with the tasks' vectors ``w [T, K]`` →
        ``[T, n, out]``: the ``T`` task weights built once, applied in one batched matmul."""
        weight, bias = self.task_weights(w)
        return torch.baddbmm(bias.unsqueeze(1), x, weight)

    def per_row(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x [B, in]`` with each row's vector ``w [B, K]`` → ``[B, out]``: the ``K`` copies'
        outputs mixed per row, ``Σ_k w_ik (x_i W_k + b_k)``."""
        b, k = x.shape[0], self.num_params
        flat = self.weight.permute(1, 0, 2).reshape(self.in_features, k * self.out_features)
        outs = (x @ flat).view(b, k, self.out_features)
        return torch.bmm(w.unsqueeze(1), outs).squeeze(1) + w @ self.bias

    def extra_repr(self) -> str:
        return f"K={self.num_params}, in={self.in_features}, out={self.out_features}"


class CompositionalVectors(nn.Module):
    """The tasks' compositional vectors ``W = [w_1; …; w_T]`` (``weight [T, K]``), task-specific
    parameters: row ``τ`` receives gradient from task ``τ``'s samples only.

    Initialization N(0, 1) per entry, free and unconstrained: the authors' task-encoding layer
    is a bias-free linear map of the one-hot task with ``torch.nn.init.normal_`` weights and an
    identity output activation. With identically initialized copies of Φ this random ``w`` is
    what breaks the symmetry between the copies (equal ``w_τk`` over ``k`` would keep them equal
    forever).

    Resets (PaCo's w-reset, see :class:`mtrl.optim.combiners.PaCoMaskoutCombiner`) are
    *scheduled* by :meth:`schedule_reset` during a combiner's backward pass (which tasks, and the
    random mixing weights over the kept tasks) and *applied* at the start of the next forward
    pass, i.e. after the optimizer step of that update, from the kept tasks' vectors as that
    step left them — the order of the authors' code, which resets in ``after_update``. The
    optimizer's state (Adam moments) of the reset rows is left as it is, as in the authors'
    code. Scheduled resets are buffers, so a checkpoint taken in between carries them."""

    mtrl_task_specific = True

    reset_pending: torch.Tensor
    reset_mix: torch.Tensor

    def __init__(self, num_tasks: int, num_params: int) -> None:
        super().__init__()
        self.num_tasks, self.num_params = num_tasks, num_params
        self.weight = nn.Parameter(torch.randn(num_tasks, num_params))
        self.register_buffer("reset_pending", torch.zeros(num_tasks, dtype=torch.bool))
        self.register_buffer("reset_mix", torch.zeros(num_tasks, num_tasks))
        # Whether a reset may be pending (a Python flag, so that checking costs no device
        # synchronization); set by schedule_reset and by loading a state dict.
        self._maybe_pending = True

    def forward(self) -> torch.Tensor:
        """``W [T, K]``, after applying any scheduled reset."""
        if self._maybe_pending:
            self.apply_resets()
        return self.weight

    @torch.no_grad()
    def apply_resets(self) -> None:
        """Replace the scheduled rows of ``W`` by their mixtures of the current rows
        (``w_τ ← Σ_j β_τj w_j``) and clear the schedule. Non-finite rows (a diverged task's
        own vector, whose weight β is 0) count as zeros in the mixture."""
        mixed = self.reset_mix @ torch.nan_to_num(self.weight, nan=0.0, posinf=0.0, neginf=0.0)
        self.weight.copy_(torch.where(self.reset_pending.unsqueeze(1), mixed, self.weight))
        self.reset_pending.zero_()
        self._maybe_pending = False

    @torch.no_grad()
    def schedule_reset(self, mask: torch.Tensor, method: str = "interpolate") -> None:
        """Schedule ``w_τ`` of every task with ``mask[τ]`` (bool ``[T]``) to be re-initialized
        from the vectors of the tasks *not* in ``mask`` (the authors' ``reset_task_method``):

        * ``interpolate``: ``w_τ ← Σ_j β_j w_j`` over the kept tasks ``j``, with ``β`` uniform
          random numbers normalized to sum to 1 (a random convex combination: task ``τ``
          restarts inside the hull of the other tasks' policies);
        * ``copy``: ``w_τ ← w_j`` for one kept task ``j`` chosen uniformly at random.

        Tensor operations only (no host synchronization); the random numbers come from torch's
        global generator on ``W``'s device, drawn at every call. Tasks are left alone when no
        task is kept."""
        if method not in RESET_METHODS:
            raise ValueError(f"unknown reset method {method!r}; allowed: "
                             f"{', '.join(RESET_METHODS)}")
        w = self.weight.detach()
        t = w.shape[0]
        mask = mask.to(device=w.device, dtype=torch.bool)
        keep = (~mask).to(w.dtype)
        scores = torch.rand(t, t, device=w.device, dtype=w.dtype)
        if method == "interpolate":
            beta = scores * keep
        else:
            pick = (scores * keep).argmax(dim=1)
            beta = torch.nn.functional.one_hot(pick, t).to(w.dtype) * keep
        total = beta.sum(dim=1, keepdim=True)
        due = mask & (total.squeeze(1) > 0)
        mix = beta / total.clamp_min(torch.finfo(w.dtype).tiny)
        self.reset_mix.copy_(torch.where(due.unsqueeze(1), mix, self.reset_mix))
        self.reset_pending.logical_or_(due)
        self._maybe_pending = True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._maybe_pending = True

    def extra_repr(self) -> str:
        return f"tasks={self.num_tasks}, K={self.num_params}"


class PaCoNet(TaskNet):
    """A ReLU MLP ``in_dim → hidden… → out_dim`` on the observation whose parameters for task
    ``τ`` are ``θ_τ = Φ w_τ`` (Sun et al. 2022, Fig. 2): every layer a
    :class:`CompositionalLinear` with ``K = num_params`` copies, one
    :class:`CompositionalVectors` ``W [T, K]`` shared by the layers of this network."""

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, hidden: Sequence[int], *,
                 num_params: int = 5, identical_init: bool = True) -> None:
        super().__init__()
        if num_params < 1:
            raise ValueError(f"num_params={num_params} must be >= 1")
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.num_params = num_params
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(
            CompositionalLinear(num_params, a, b, identical_init)
            for a, b in itertools.pairwise(dims)
        )
        self.w = CompositionalVectors(num_tasks, num_params)

    def _layers(self) -> Sequence[CompositionalLinear]:
        return cast(Sequence[CompositionalLinear], self.layers)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        w = self.w()
        if per_task is not None:
            h = x.view(self.num_tasks, per_task, self.in_dim)
            for i, layer in enumerate(self._layers()):
                if i:
                    h = torch.relu(h)
                h = layer.stratified(h, w)
            return h.reshape(-1, self.out_dim)
        wb = w.index_select(0, task_id)
        h = x
        for i, layer in enumerate(self._layers()):
            if i:
                h = torch.relu(h)
            h = layer.per_row(h, wb)
        return h

    @torch.no_grad()
    def task_parameters(self, task: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``θ_τ = Φ w_τ`` materialized: ``(weight [in, out], bias [out])`` of every layer of
        task ``task``'s network (for inspection; the forward pass never builds it per row)."""
        w = self.w()[task : task + 1]
        out = []
        for layer in self._layers():
            weight, bias = layer.task_weights(w)
            out.append((weight[0].clone(), bias[0].clone()))
        return out
