"""Soft Modularization (Yang, Xu, Wu & Wang 2020, "Multi-Task Reinforcement Learning with Soft
Modularization", NeurIPS, Sec. 4).

Base network: ``L`` layers of ``m`` modules, each module a linear map to ``d`` units with ReLU.
Routing network: the observation embedding ``f(s)`` (an MLP to ``D`` units) and the task
embedding ``h(z)`` (a linear map of the one-hot task, ``D`` units) are combined by element-wise
product, ``e = f(s) · h(z)``, and produce per sample

    p^1     = W_d^1 ReLU(e)                                   (Eq. 5)
    p^{l+1} = W_d^{l+1} ReLU((W_u^l p^l) · e)                  (Eq. 6)
    p̂^l_{i,j} = exp(p^l_{i,j}) / Σ_j exp(p^l_{i,j})           (Eq. 7)

so each ``p̂^l`` is an ``m × m`` matrix whose row ``i`` (weights from the modules ``j`` of layer
``l`` into module ``i`` of layer ``l + 1``) is non-negative and sums to 1. The base network's
module ``i`` at layer ``l + 1`` receives ``Σ_j p̂^l_{i,j} y^l_j`` where
``y^l_j = ReLU(W^l_j x^l_j)`` (Eq. 8); every module of the first layer receives ``ReLU(f(s))``.

The output: as in the authors' implementation (the paper leaves it open), one more routing
output ``p^L ∈ R^m`` (softmax over the last layer's modules) weights the last layer's module
outputs, ``o = W_out Σ_j p̂^L_j y^L_j``. The ``L − 1`` mixing matrices and the final weights are the
routing weights logged per task. Known differences of the authors' code from the paper that
mtrl does *not* copy (listed by Meta-World+'s reimplementation): routing skip connections
across all previous ``p``, an extra task-embedding MLP, ReLU after instead of before the mixing.

The ``m`` modules of a layer are one ``[m, in, d]`` stacked weight (:class:`EnsembleLinear`),
applied with one batched matmul. With ``m = 1`` every softmax is 1 and the network is exactly an
MLP ``f → d → … → d → out`` (tested).
"""

from __future__ import annotations

import torch
from torch import nn

from mtrl.modules.mlp import EnsembleLinear
from mtrl.modules.nets import TaskNet
from mtrl.modules.task_encoding import OneHotTaskEncoder


class SoftModularNet(TaskNet):
    """See the module docstring. Paper setups: MT10 "shallow" L = 2, m = 2; MT50 "deep" L = 4,
    m = 4; d = 256, D = 400 (Meta-World+ SoftModulesConfig uses the same)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        *,
        num_layers: int = 2,
        num_modules: int = 2,
        module_dim: int = 256,
        embedding_dim: int = 400,
        routing_dim: int = 256,
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_modules < 1:
            raise ValueError("soft modularization needs num_layers >= 1 and num_modules >= 1")
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.num_layers, self.num_modules = num_layers, num_modules
        m, d, big_d = num_modules, module_dim, embedding_dim
        self.f = nn.Sequential(nn.Linear(in_dim, routing_dim), nn.ReLU(),
                               nn.Linear(routing_dim, big_d))
        self.task_encoder = OneHotTaskEncoder(num_tasks)
        self.h = nn.Linear(num_tasks, big_d)
        self.modules_ = nn.ModuleList(
            EnsembleLinear(m, big_d if layer == 0 else d, d) for layer in range(num_layers)
        )
        # W_d^l: D → m² for the mixing matrices, D → m for the final module weights.
        self.w_d = nn.ModuleList(
            nn.Linear(big_d, m * m if layer < num_layers - 1 else m)
            for layer in range(num_layers)
        )
        # W_u^l: the previous routing output p^l (m² values) → D.
        self.w_u = nn.ModuleList(nn.Linear(m * m, big_d) for _ in range(num_layers - 1))
        self.out = nn.Linear(d, out_dim)
        self._last: list[torch.Tensor] | None = None
        self._last_per_task: int | None = None

    def routing(self, x: torch.Tensor, task_id: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``f(s)`` and the normalized routing weights: ``L − 1`` tensors ``[B, m, m]`` (rows sum
        to 1 over inputs ``j``) followed by the final ``[B, m]`` module weights."""
        fs = self.f(x)
        e = fs * self.h(self.task_encoder(task_id))
        m = self.num_modules
        weights: list[torch.Tensor] = []
        p = self.w_d[0](torch.relu(e))
        for layer in range(self.num_layers):
            if layer > 0:
                p = self.w_d[layer](torch.relu(self.w_u[layer - 1](p) * e))
            if layer < self.num_layers - 1:
                weights.append(torch.softmax(p.view(-1, m, m), dim=-1))
            else:
                weights.append(torch.softmax(p, dim=-1))
        return fs, weights

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        fs, weights = self.routing(x, task_id)
        h = torch.relu(fs)  # every first-layer module sees ReLU(f(s))
        y = torch.relu(self.modules_[0](h))  # [m, B, d]
        for layer in range(1, self.num_layers):
            mix = weights[layer - 1]  # [B, m_out, m_in]
            x_in = torch.einsum("bij,jbd->ibd", mix, y)
            y = torch.relu(self.modules_[layer](x_in))
        final = torch.einsum("bj,jbd->bd", weights[-1], y)
        if per_task is not None:
            self._last = [w.detach() for w in weights]
            self._last_per_task = per_task
        return self.out(final)

    def report(self) -> dict[str, torch.Tensor]:
        """Per-task mean routing weights of the last training forward: ``layer<l>`` →
        ``[T, m, m]`` for the mixing layers and ``output`` → ``[T, m]``."""
        if self._last is None or self._last_per_task is None:
            return {}
        out: dict[str, torch.Tensor] = {}
        n = self._last_per_task
        for layer, w in enumerate(self._last):
            per_task = w.view(self.num_tasks, n, *w.shape[1:]).mean(1)
            key = f"layer{layer + 1}" if layer < self.num_layers - 1 else "output"
            out[key] = per_task
        return out
