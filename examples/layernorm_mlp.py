"""An MLP with layer normalization after every hidden layer: an mtrl architecture plug-in.

Layer normalization: Ba, Kiros & Hinton (2016), "Layer Normalization", arXiv:1607.06450. In
off-policy RL, LayerNorm in the critic keeps its features bounded and curbs value
over-estimation far from the data: Ball, Smith, Kostrikov & Levine (2023), "Efficient Online
Reinforcement Learning with Offline Data" (RLPD), ICML; Nauman et al. (2024), "Bigger,
Regularized, Optimistic: scaling for compute and sample-efficient continuous control" (BRO).

    mtrl train toy-mtsac --plugin examples/layernorm_mlp.py \\
        --agent.actor-arch layernorm-mlp --agent.critic-arch layernorm-mlp
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import mtrl
from mtrl.modules.nets import TaskNet
from mtrl.modules.task_encoding import make_task_encoder


class LayerNormMLP(TaskNet):
    """``[x, encoder(task)] → (Linear → LayerNorm → ReLU) × len(hidden) → Linear``. The
    LayerNorm gains and biases are shared parameters outside linear layers: gradient
    combiners get their per-task gradients from a vmapped backward (see
    ``mtrl.optim.task_grads``), which costs more only on the updates that need per-task
    gradients (PCGrad, diagnostics)."""

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, hidden: Sequence[int],
                 task_encoder: str = "one-hot", task_embedding_dim: int = 0) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.task_encoder = make_task_encoder(task_encoder, num_tasks, task_embedding_dim)
        layers: list[nn.Module] = []
        d = in_dim + self.task_encoder.out_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU()]
            d = h
        self.net = nn.Sequential(*layers, nn.Linear(d, out_dim))

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        return self.net(torch.cat([x, self.task_encoder(task_id)], dim=-1))


def build(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], arch: Any) -> TaskNet:
    """Sizes from agent.actor_hidden / agent.critic_hidden; the task input from agent.arch."""
    return LayerNormMLP(in_dim, out_dim, num_tasks, hidden, arch.task_encoder,
                        arch.task_embedding_dim)


mtrl.register_architecture("layernorm-mlp", build)
