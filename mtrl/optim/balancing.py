"""Loss-balancing combiners: learn per-task loss weights ``λ_k`` for ``(1/T) Σ_k λ_k L_k``.

All three read the *values* of the task losses, so they are defined only for non-negative
losses (critic/value losses); the config refuses them for the SAC actor, whose loss
``α log π − Q`` can be negative. Their own weights are updated after each backward pass, with
closed-form gradients (no second-order backward), on the loss's device and without host
synchronization. Everything they learn is in ``state_dict`` (plain tensors), so a resumed run
continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from mtrl.optim.combiners import GradientCombiner


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """Checkpoints load on the CPU; state moves to the loss's device on first use."""
    return t if t is None or t.device == device else t.to(device)


def _req(t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None
    return t


class _Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) on one tensor, with state as plain tensors."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.t = 0

    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        if self.m is None or self.v is None:
            self.m, self.v = torch.zeros_like(param), torch.zeros_like(param)
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))

    def to(self, device: torch.device) -> None:
        self.m, self.v = _to(self.m, device), _to(self.v, device)

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v, self.t = state["m"], state["v"], int(state["t"])


class GradNormCombiner(GradientCombiner):
    """GradNorm (Chen et al. 2018, "GradNorm: Gradient Normalization for Adaptive Loss Balancing
    in Deep Multitask Networks", Sec. 3.2, Eq. 1–2).

    With weights ``w_k`` (start at 1) and ``G_k = ‖∇_W w_k L_k‖`` the norm of task ``k``'s
    weighted gradient of the shared parameters ``W``, ``Ḡ = mean_k G_k``, the relative inverse
    training rate ``r_k = L̃_k / mean(L̃)`` with ``L̃_k = L_k(t) / L_k(0)``, GradNorm minimizes

        L_grad = Σ_k | G_k − Ḡ · r_k^α |          (Eq. 2; the target Ḡ r_k^α is a constant)

    over ``w``, then renormalizes ``Σ_k w_k = T``. Since ``G_k = w_k ‖∇_W L_k‖``, the gradient
    is ``∂L_grad/∂w_k = sign(G_k − Ḡ r_k^α) · ‖∇_W L_k‖`` in closed form — no double backward.
    The norms come from the diagonal of the per-task gradients' Gram matrix, computed in the same
    backward pass as the network update. Deviation: the paper takes ``W`` to be the last shared
    layer to save compute; here the per-task gradients of all shared parameters are available
    at no extra cost, so ``W`` is all of them. ``L_k(0)`` is the first observed loss of task k.
    """

    name = "gradnorm"
    needs_task_grads = True

    def __init__(self, diagnostics_every: int = 0, *, alpha: float = 1.5, lr: float = 1e-3,
                 min_weight: float = 1e-3) -> None:
        self.alpha = alpha
        self.min_weight = min_weight
        self.opt = _Adam(lr)
        self.w: torch.Tensor | None = None
        self.initial_loss: torch.Tensor | None = None
        self._last_g: torch.Tensor | None = None
        super().__init__(diagnostics_every)

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        if self.w is None:
            self.w = torch.ones_like(task_losses.detach())
        dev = task_losses.device
        if self.w.device != dev:
            self.w, self.initial_loss = _req(_to(self.w, dev)), _to(self.initial_loss, dev)
            self.opt.to(dev)
        return self.w

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        assert gram is not None and self.w is not None
        if self.initial_loss is None:
            self.initial_loss = task_losses.clone()
        num_tasks = task_losses.shape[0]
        g = gram.diagonal().clamp_min(0).sqrt().to(self.w.dtype)  # G_k = ‖∇ w_k L_k‖
        tiny = torch.finfo(self.w.dtype).tiny
        ratio = task_losses / self.initial_loss.clamp_min(1e-12)
        r = ratio / ratio.mean().clamp_min(1e-12)
        target = g.mean() * r.pow(self.alpha)
        grad_w = torch.sign(g - target) * g / self.w.clamp_min(tiny)
        self.opt.step(self.w, grad_w)
        self.w.clamp_(min=self.min_weight)
        self.w.mul_(num_tasks / self.w.sum())
        self._last_g = g

    def extra_report(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.w is not None:
            out["weight"] = self.w.clone()
        if self._last_g is not None:
            out["grad_norm"] = self._last_g.clone()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "w": self.w, "initial_loss": self.initial_loss,
                "adam": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.w, self.initial_loss = state["w"], state["initial_loss"]
        self.opt.load_state_dict(state["adam"])


class UncertaintyCombiner(GradientCombiner):
    """Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla 2018, "Multi-Task Learning
    Using Uncertainty to Weigh Losses for Scene Geometry and Semantics", Eq. 7, with the
    log-variance parameterization ``s_k = log σ_k²`` of their Sec. 3.2):

        L = Σ_k ½ exp(−s_k) L_k + ½ s_k.

    The network gets the weights ``λ_k = exp(−s_k)`` (the ½ and the 1/T of the mean objective
    are one constant factor for all tasks); ``s`` (start 0) is updated by Adam on its closed-form
    gradient ``∂L/∂s_k = ½ − ½ exp(−s_k) L_k``, whose fixed point is ``exp(s_k) = L_k``: each
    task's loss is divided by its own running scale.
    """

    name = "uncertainty"

    def __init__(self, diagnostics_every: int = 0, *, lr: float = 1e-3) -> None:
        self.opt = _Adam(lr)
        self.s: torch.Tensor | None = None
        super().__init__(diagnostics_every)

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        if self.s is None:
            self.s = torch.zeros_like(task_losses.detach())
        if self.s.device != task_losses.device:
            self.s = self.s.to(task_losses.device)
            self.opt.to(task_losses.device)
        return torch.exp(-self.s)

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        assert self.s is not None
        grad_s = 0.5 - 0.5 * torch.exp(-self.s) * task_losses
        self.opt.step(self.s, grad_s)

    def extra_report(self) -> dict[str, torch.Tensor]:
        if self.s is None:
            return {}
        return {"weight": torch.exp(-self.s), "sigma": torch.exp(0.5 * self.s)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "s": self.s, "adam": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.s = state["s"]
        self.opt.load_state_dict(state["adam"])


class DWACombiner(GradientCombiner):
    """Dynamic Weight Averaging (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
    Attention", Eq. 7):

        λ_k(t) = T · exp(w_k(t−1)/τ) / Σ_i exp(w_i(t−1)/τ),     w_k(t−1) = L_k(t−1) / L_k(t−2),

    where ``t`` counts epochs and ``L_k(·)`` is an epoch's mean loss; ``λ = 1`` for the first two
    epochs, as in the paper. RL has no epochs: here an epoch is a window of ``window`` updates.
    """

    name = "dwa"

    def __init__(self, diagnostics_every: int = 0, *, temperature: float = 2.0,
                 window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window={window} must be >= 1")
        self.temperature = temperature
        self.window = window
        self.acc: torch.Tensor | None = None
        self.in_window = 0
        self.windows_done = 0
        self.prev1: torch.Tensor | None = None  # mean loss of the last finished window
        self.prev2: torch.Tensor | None = None  # ... and of the one before
        self.lam: torch.Tensor | None = None
        super().__init__(diagnostics_every)

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        if self.lam is None:
            self.lam = torch.ones_like(task_losses.detach())
        dev = task_losses.device
        if self.lam.device != dev:
            self.lam, self.acc = _req(_to(self.lam, dev)), _to(self.acc, dev)
            self.prev1, self.prev2 = _to(self.prev1, dev), _to(self.prev2, dev)
        return self.lam

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        self.acc = task_losses.clone() if self.acc is None else self.acc + task_losses
        self.in_window += 1
        if self.in_window < self.window:
            return
        mean = self.acc / self.in_window
        self.acc, self.in_window = None, 0
        self.prev2, self.prev1 = self.prev1, mean
        self.windows_done += 1
        if self.prev2 is not None:
            num_tasks = mean.shape[0]
            rate = self.prev1 / self.prev2.clamp_min(1e-12)
            self.lam = num_tasks * torch.softmax(rate / self.temperature, dim=0)

    def extra_report(self) -> dict[str, torch.Tensor]:
        return {} if self.lam is None else {"weight": self.lam.clone()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "acc": self.acc, "in_window": self.in_window,
                "windows_done": self.windows_done, "prev1": self.prev1, "prev2": self.prev2,
                "lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.acc, self.in_window = state["acc"], int(state["in_window"])
        self.windows_done = int(state["windows_done"])
        self.prev1, self.prev2, self.lam = state["prev1"], state["prev2"], state["lam"]
