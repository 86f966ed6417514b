"""Mixtures of shared experts, mixed per task.

``k`` expert encoders ``e_i(x)`` (MLPs evaluated together as one stacked ``[k, in, out]``
chain) are combined with per-sample weights ``α`` (non-negative, summing to 1 over experts) into
``z = Σ_i α_i e_i(x)``; a head MLP on ``[z, c_task]`` produces the output. Two gatings:

* ``care`` — CARE (Sodhani, Zhang & Pineau 2021, "Multi-Task Reinforcement Learning with
  Context-based Representations", Sec. 4): the task context ``c_task`` attends over the experts,
  ``α = softmax(W c_task)``, so the mixture depends on the task only. CARE's context comes from
  pretrained language embeddings of task descriptions; mtrl uses a learned task embedding (or
  the one-hot) because no metadata ships with the benchmarks — say so when comparing.
* ``mmoe`` — MMoE (Ma et al. 2018, "Modeling Task Relationships in Multi-task Learning with
  Multi-gate Mixture-of-Experts", Eq. 3–4): one gate per task on the input,
  ``α = softmax(W_task x)``, stored as stacked per-task gate weights.

``report()`` gives the per-task mean expert weights ``[T, k]`` of the last training forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtrl.modules.mlp import EnsembleMLP, mlp
from mtrl.modules.nets import MultiHeadLinear, TaskNet
from mtrl.modules.task_encoding import make_task_encoder

GATINGS = ("care", "mmoe")


class MixtureOfExpertsNet(TaskNet):
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden: Sequence[int],
        *,
        num_experts: int = 4,
        expert_hidden: Sequence[int] = (400, 400),
        gating: str = "care",
        task_encoder: str = "one-hot",
        task_embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        if gating not in GATINGS:
            raise ValueError(f"unknown gating {gating!r}; allowed: {', '.join(GATINGS)}")
        if num_experts < 1 or len(expert_hidden) < 1:
            raise ValueError("need num_experts >= 1 and a non-empty expert_hidden")
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.num_experts, self.gating = num_experts, gating
        self.task_encoder = make_task_encoder(task_encoder, num_tasks, task_embedding_dim)
        self.experts = EnsembleMLP(num_experts, in_dim, list(expert_hidden[:-1]),
                                   expert_hidden[-1])
        if gating == "care":
            self.attention: nn.Module = nn.Linear(self.task_encoder.out_dim, num_experts)
        else:
            self.attention = MultiHeadLinear(num_tasks, in_dim, num_experts)
        self.head = mlp(expert_hidden[-1] + self.task_encoder.out_dim, hidden, out_dim)
        self._last: torch.Tensor | None = None
        self._last_per_task: int | None = None

    def expert_weights(self, x: torch.Tensor, task_id: torch.Tensor,
                       per_task: int | None = None) -> torch.Tensor:
        """``α [B, k]``: non-negative, summing to 1 over experts."""
        if self.gating == "care":
            logits = self.attention(self.task_encoder(task_id))
        else:
            logits = self.attention(x, task_id, per_task)
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        alpha = self.expert_weights(x, task_id, per_task)
        z = torch.einsum("be,ebd->bd", alpha, torch.relu(self.experts(x)))
        if per_task is not None:
            self._last, self._last_per_task = alpha.detach(), per_task
        return self.head(torch.cat([z, self.task_encoder(task_id)], dim=-1))

    def report(self) -> dict[str, torch.Tensor]:
        if self._last is None or self._last_per_task is None:
            return {}
        w = self._last.view(self.num_tasks, self._last_per_task, -1).mean(1)
        return {"experts": w}
