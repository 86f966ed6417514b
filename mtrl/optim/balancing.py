"""Loss-balancing combiners: learn per-task loss weights ``λ_k`` of ``(1/T) Σ_k λ_k L_k``.

* :class:`GradNormCombiner` — GradNorm (Chen et al. 2018): weights that equalize the tasks'
  gradient norms on the shared parameters, modulated by their relative training rates.
* :class:`UncertaintyCombiner` — homoscedastic uncertainty (Kendall et al. 2018): each loss is
  divided by a learned scale ``σ_k² ≈ L_k``.
* :class:`DWACombiner` — Dynamic Weight Averaging (Liu et al. 2019): weights from the rate at
  which each task's loss went down over the last two windows of updates.

All three read the *values* of the task losses (ratios ``L_k(t)/L_k(0)``, ``log σ_k² → log L_k``,
``L_k(t−1)/L_k(t−2)``), so they are only meaningful for non-negative losses such as the critic's
squared TD errors; the config refuses them for the SAC actor, whose loss ``α log π − Q`` can be
negative.

Implementation notes shared by the three:

* Their own parameters are updated in ``after_backward`` with closed-form gradients (no
  second-order backward through the network) and a small Adam (:class:`_Adam`) whose state is
  plain tensors.
* Per-task state is created lazily at the first ``backward`` (the number of tasks and the device
  are known then), lives on the loss's device and is updated with tensor ops only: no ``.item()``
  and no Python branch on a tensor value, hence no host synchronization per update. The only
  Python-side state are counters (Adam's step, DWA's position in its window).
* ``state_dict`` holds everything needed to continue exactly (learned weights, Adam moments and
  step, initial losses, window sums, counters) as tensors and ints only, so checkpoints load
  with ``torch.load(weights_only=True)``; tensors not created yet are simply absent. Loaded
  tensors (on the CPU) move to the loss's device at the next ``backward``.
"""

from __future__ import annotations

from typing import Any

import torch

from mtrl.optim.combiners import GradientCombiner
from mtrl.registry import register_combiner

#: Floor of denominators made of losses (an initial or a window-mean loss of exactly 0).
_LOSS_EPS = 1e-12


def _moved(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return t if t is None or t.device == device else t.to(device)


def _put(state: dict[str, Any], key: str, t: torch.Tensor | None) -> None:
    """Store a clone of ``t`` under ``key`` unless it does not exist yet."""
    if t is not None:
        state[key] = t.detach().clone()


def _take(state: dict[str, Any], key: str) -> torch.Tensor | None:
    t = state.get(key)
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"combiner state {key!r} must be a tensor, got {type(t).__name__}")
    return t.detach().clone()


class _Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) updating one tensor in place, state as tensors.

    ``m ← β₁ m + (1−β₁) g``, ``v ← β₂ v + (1−β₂) g²``, ``θ ← θ − lr · m̂ / (√v̂ + ε)`` with
    ``m̂ = m / (1−β₁ᵗ)``, ``v̂ = v / (1−β₂ᵗ)`` (the same update as ``torch.optim.Adam``)."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0")
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.t = 0

    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        if self.m is None or self.v is None:
            self.m = torch.zeros_like(param)
            self.v = torch.zeros_like(param)
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v / (1 - b2**self.t)).sqrt_().add_(self.eps)
        param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))

    def to(self, device: torch.device) -> None:
        self.m, self.v = _moved(self.m, device), _moved(self.v, device)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"t": self.t}
        _put(state, "m", self.m)
        _put(state, "v", self.v)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.m, self.v = _take(state, "m"), _take(state, "v")


class GradNormCombiner(GradientCombiner):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018, "GradNorm: Gradient Normalization
    for Adaptive Loss Balancing in Deep Multitask Networks", ICML; Eq. 1–2 and Sec. 3.2).

    The network minimizes ``(1/T) Σ_k w_k L_k`` (Eq. 1, with mtrl's mean scaling) with learned
    weights ``w_k`` that start at 1. After each backward pass, with

    * ``G_k = ‖∇_W (w_k L_k)‖`` the norm of task ``k``'s weighted gradient of the shared
      parameters ``W``, and ``Ḡ = mean_k G_k``,
    * ``L̃_k = L_k(t) / L_k(0)`` the loss ratio (inverse training rate) and
      ``r_k = L̃_k / mean_j L̃_j`` the relative inverse training rate,

    the weights take one Adam step (learning rate ``lr``) on

        L_grad = Σ_k | G_k − Ḡ · r_k^α |                                     (Eq. 2)

    with the target ``Ḡ · r_k^α`` held constant (as in the paper), and are then renormalized to
    ``Σ_k w_k = T`` (Sec. 3.2). Tasks that train slowly (large ``r_k``) get larger gradients;
    ``α`` sets how strongly; ``α = 0`` simply equalizes the gradient norms.

    Closed-form weight gradient: for ``w_k > 0``, ``G_k = w_k ‖∇_W L_k‖``, and only the ``k``-th
    term of ``L_grad`` depends on ``w_k`` once the target is a constant, so

        ∂L_grad/∂w_k = sign(G_k − Ḡ r_k^α) · ‖∇_W L_k‖ = sign(G_k − Ḡ r_k^α) · G_k / w_k.

    No second-order backward through the network is needed (the paper's implementation
    differentiates ``G_k`` through autograd). ``G_k²`` is the diagonal of the Gram matrix of
    the per-task gradients that the base class computes in the same backward pass as the network
    update (:mod:`mtrl.optim.task_grads`), so GradNorm costs little more than ``mean``.

    Differences from the paper, all deliberate:

    * ``W`` is *all* shared parameters, not only the last shared layer: the paper restricts
      ``W`` to save the extra backward passes, which per-task gradients from one backward do not
      need.
    * ``L_k(0)`` is the first loss observed (per task, from the first update); a task whose
      initial loss is 0 gets its denominator floored at ``1e-12`` instead of dividing by zero.
    * After the renormalization each ``w_k`` is kept at least ``min_weight·T/Σw`` (clamped to
      ``min_weight`` before renormalizing) so that no task's weight reaches 0 or goes negative,
      where ``G_k = w_k ‖∇L_k‖`` would no longer hold.

    Only for non-negative losses (see the module docstring).
    """

    name = "gradnorm"
    needs_task_grads = True

    def __init__(self, diagnostics_every: int = 0, *, alpha: float = 1.5, lr: float = 1e-3,
                 min_weight: float = 1e-3) -> None:
        if alpha < 0:
            raise ValueError(f"alpha={alpha} must be >= 0")
        if min_weight <= 0:
            raise ValueError(f"min_weight={min_weight} must be > 0")
        self.alpha = alpha
        self.min_weight = min_weight
        self.opt = _Adam(lr)
        self.w: torch.Tensor | None = None  # [T] loss weights
        self.initial_loss: torch.Tensor | None = None  # [T] L_k(0)
        self._grad_norm: torch.Tensor | None = None  # [T] G_k of the last update (report)
        super().__init__(diagnostics_every)

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        device = task_losses.device
        if self.w is None:
            self.w = torch.ones(task_losses.shape[0], device=device, dtype=task_losses.dtype)
        elif self.w.device != device:
            self.w = self.w.to(device)
            self.initial_loss = _moved(self.initial_loss, device)
            self.opt.to(device)
        if self.w.shape != task_losses.shape:
            raise ValueError(f"{self.name}: {tuple(task_losses.shape)} task losses, weights "
                             f"for {self.w.shape[0]} tasks")
        # A copy: ``after_backward`` updates ``self.w`` in place.
        return self.w.clone()

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        assert gram is not None, "GradNorm needs the per-task gradients (needs_task_grads)"
        assert self.w is not None
        w = self.w
        losses = task_losses.to(w.dtype)
        if self.initial_loss is None:
            self.initial_loss = losses.clone()
        num_tasks = w.shape[0]
        g = gram.diagonal().clamp_min(0).sqrt().to(w.dtype)  # G_k = ‖∇_W (w_k L_k)‖
        loss_ratio = losses / self.initial_loss.clamp_min(_LOSS_EPS)  # L̃_k
        rel_rate = loss_ratio / loss_ratio.mean().clamp_min(_LOSS_EPS)  # r_k
        target = g.mean() * rel_rate.pow(self.alpha)  # Ḡ r_k^α, a constant
        grad_w = torch.sign(g - target) * g / w.clamp_min(torch.finfo(w.dtype).tiny)
        self.opt.step(w, grad_w)
        w.clamp_(min=self.min_weight)
        w.mul_(num_tasks / w.sum())
        self._grad_norm = g

    def extra_report(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.w is not None:
            out["weight"] = self.w.clone()
        if self._grad_norm is not None:
            out["grad_norm"] = self._grad_norm
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        _put(state, "w", self.w)
        _put(state, "initial_loss", self.initial_loss)
        state["adam"] = self.opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.w = _take(state, "w")
        self.initial_loss = _take(state, "initial_loss")
        self.opt.load_state_dict(state["adam"])
        self._grad_norm = None


class UncertaintyCombiner(GradientCombiner):
    """Uncertainty weighting (Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty
    to Weigh Losses for Scene Geometry and Semantics", CVPR; Eq. 7, the regression form, in the
    log-variance parameterization ``s_k = log σ_k²`` their Sec. 3.2 recommends for stability):

        L(W, s) = Σ_k ½ exp(−s_k) L_k(W) + ½ s_k                               (Eq. 7)

    (``½ s_k = log σ_k``). The network gets the loss weights ``λ_k = exp(−s_k)``: the factor
    ``½`` and the ``1/T`` of mtrl's mean objective multiply every task alike, a constant factor
    of the learning rate. The log-variances ``s`` (start at 0, ``λ = 1``) take one Adam step
    (learning rate ``lr``) per update on their own closed-form gradient, from this update's
    detached losses:

        ∂L/∂s_k = −½ exp(−s_k) L_k + ½,

    zero at ``exp(s_k) = L_k``: each task's loss ends up divided by (a running estimate of) its
    own scale. Only for non-negative losses (see the module docstring).
    """

    name = "uncertainty"

    def __init__(self, diagnostics_every: int = 0, *, lr: float = 1e-3) -> None:
        self.opt = _Adam(lr)
        self.s: torch.Tensor | None = None  # [T] log σ_k²
        super().__init__(diagnostics_every)

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        device = task_losses.device
        if self.s is None:
            self.s = torch.zeros(task_losses.shape[0], device=device, dtype=task_losses.dtype)
        elif self.s.device != device:
            self.s = self.s.to(device)
            self.opt.to(device)
        if self.s.shape != task_losses.shape:
            raise ValueError(f"{self.name}: {tuple(task_losses.shape)} task losses, weights "
                             f"for {self.s.shape[0]} tasks")
        return torch.exp(-self.s)

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        assert self.s is not None
        grad_s = 0.5 - 0.5 * torch.exp(-self.s) * task_losses.to(self.s.dtype)
        self.opt.step(self.s, grad_s)

    def extra_report(self) -> dict[str, torch.Tensor]:
        if self.s is None:
            return {}
        return {"weight": torch.exp(-self.s), "sigma": torch.exp(0.5 * self.s)}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        _put(state, "s", self.s)
        state["adam"] = self.opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.s = _take(state, "s")
        self.opt.load_state_dict(state["adam"])


class DWACombiner(GradientCombiner):
    """Dynamic Weight Averaging (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
    Attention", CVPR; Eq. 7):

        λ_k(t) = T · exp(r_k(t−1)/τ) / Σ_i exp(r_i(t−1)/τ),    r_k(t−1) = L_k(t−1) / L_k(t−2),

    with temperature ``τ``, ``t`` counting epochs and ``L_k(·)`` an epoch's mean loss of task
    ``k``; ``λ_k(t) = 1`` for ``t = 1, 2`` (the paper's initialization), so ``Σ_k λ_k = T``
    always. Tasks whose loss went down more slowly get larger weights.

    RL has no epochs: in mtrl an "epoch" is a window of ``window`` consecutive updates and
    ``L_k(·)`` the mean of task ``k``'s loss over the window. The loss sums are accumulated on
    the device; the weights change only when a window ends, and are 1 during the first two
    windows. A window-mean loss of exactly 0 is floored at ``1e-12`` as a denominator.
    Only for non-negative losses (see the module docstring).
    """

    name = "dwa"

    def __init__(self, diagnostics_every: int = 0, *, temperature: float = 2.0,
                 window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window={window} must be >= 1")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature
        self.window = window
        self.acc: torch.Tensor | None = None  # [T] loss sum of the current window
        self.in_window = 0  # updates in the current window
        self.windows_done = 0
        self.prev1: torch.Tensor | None = None  # [T] mean loss of the last finished window
        self.prev2: torch.Tensor | None = None  # [T] ... and of the one before
        self.lam: torch.Tensor | None = None  # [T] current loss weights
        super().__init__(diagnostics_every)

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        device = task_losses.device
        if self.lam is None:
            self.lam = torch.ones(task_losses.shape[0], device=device, dtype=task_losses.dtype)
        elif self.lam.device != device:
            self.lam = self.lam.to(device)
            self.acc = _moved(self.acc, device)
            self.prev1 = _moved(self.prev1, device)
            self.prev2 = _moved(self.prev2, device)
        if self.lam.shape != task_losses.shape:
            raise ValueError(f"{self.name}: {tuple(task_losses.shape)} task losses, weights "
                             f"for {self.lam.shape[0]} tasks")
        return self.lam

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        assert self.lam is not None
        losses = task_losses.to(self.lam.dtype)
        if self.acc is None:
            self.acc = losses.clone()
        else:
            self.acc.add_(losses)
        self.in_window += 1
        if self.in_window < self.window:
            return
        mean = self.acc / self.in_window
        self.acc, self.in_window = None, 0
        self.prev2, self.prev1 = self.prev1, mean
        self.windows_done += 1
        if self.prev2 is not None:  # from the third window on
            rate = self.prev1 / self.prev2.clamp_min(_LOSS_EPS)  # r_k(t−1)
            # A new tensor, not in place: the λ handed out for this update stays as it was.
            self.lam = mean.shape[0] * torch.softmax(rate / self.temperature, dim=0)

    def extra_report(self) -> dict[str, torch.Tensor]:
        return {} if self.lam is None else {"weight": self.lam.clone()}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["in_window"] = self.in_window
        state["windows_done"] = self.windows_done
        _put(state, "acc", self.acc)
        _put(state, "prev1", self.prev1)
        _put(state, "prev2", self.prev2)
        _put(state, "lam", self.lam)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.in_window = int(state["in_window"])
        self.windows_done = int(state["windows_done"])
        self.acc = _take(state, "acc")
        self.prev1 = _take(state, "prev1")
        self.prev2 = _take(state, "prev2")
        self.lam = _take(state, "lam")


register_combiner("gradnorm", lambda cfg: GradNormCombiner(
    cfg.diagnostics_every, alpha=cfg.gradnorm_alpha, lr=cfg.weight_lr), balances_losses=True)
register_combiner("uncertainty", lambda cfg: UncertaintyCombiner(
    cfg.diagnostics_every, lr=cfg.weight_lr), balances_losses=True)
register_combiner("dwa", lambda cfg: DWACombiner(
    cfg.diagnostics_every, temperature=cfg.dwa_temperature, window=cfg.dwa_window),
    balances_losses=True)
