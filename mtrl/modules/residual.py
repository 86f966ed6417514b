"""Residual MLPs with LayerNorm for scaled actors and critics.

Two block designs from the papers that scale value networks in continuous control:

**BRO** (Nauman et al. 2024, "Bigger, Regularized, Optimistic: scaling for compute and
sample-efficient continuous control", its BroNet; also the critic and actor of BRC, Nauman et
al. 2025, "Bigger, Regularized, Categorical: High-Capacity Value Functions are Efficient
Multi-Task Learners"):

* input projection ``h_0 = ReLU(LN(W_in x + b_in))``;
* block ``i``: ``h_i = h_{i−1} + LN(W_2 ReLU(LN(W_1 h_{i−1} + b_1)) + b_2)`` (post-norm: a
  LayerNorm after each of the two layers of the residual branch);
* output ``y = W_out h_N + b_out`` (no LayerNorm before the output layer).

Every linear layer is initialized orthogonal with gain √2 and zero bias, as in the authors'
code (``default_init`` of naumix/BiggerRegularizedOptimistic and
naumix/BiggerRegularizedCategorical).

**SimBa** (Lee et al. 2024, "SimBa: Simplicity Bias for Scaling Up Parameters in Deep
Reinforcement Learning", its residual feedforward block and post-layer normalization):

* linear embedding ``h_0 = W_in x + b_in`` (no activation);
* residual feed-forward block ``i`` (pre-norm, inverted bottleneck of ``expansion`` × width,
  4 in SimBa's code): ``h_i = h_{i−1} + W_2 ReLU(W_1 LN(h_{i−1}) + b_1) + b_2``;
* post-LayerNorm and output: ``y = W_out LN(h_N) + b_out``.

The embedding and the output layer are initialized orthogonal (gain 1), the block layers
He-normal, biases zero (SimBa's code, SonyResearch/simba ``scale_rl/networks``). SimBa's
running-statistics observation normalization (RSNorm) is not part of this network.

Both take the task as in the MT-SAC MLP: the input is ``[x, encoder(task)]`` with a one-hot or
learned-embedding task encoder (:mod:`mtrl.modules.task_encoding`). BRC's critic concatenates a
learned task embedding normalized to unit L2 norm; here the embedding is not normalized.

The width of the projection and of every block is the single width of ``hidden``
(``hidden = [w] * N`` gives ``N`` blocks of width ``w``), so that actor and critic can be sized
apart with ``agent.actor_hidden`` / ``agent.critic_hidden``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mtrl.modules.nets import TaskNet
from mtrl.modules.task_encoding import make_task_encoder

RESIDUAL_BLOCKS = ("bro", "simba")


def _linear(in_dim: int, out_dim: int, init: str, gain: float = 1.0) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    if init == "orthogonal":
        nn.init.orthogonal_(layer.weight, gain=gain)
    else:  # he-normal: N(0, 2 / fan_in)
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


class BroBlock(nn.Module):
    """``h + LN(W_2 ReLU(LN(W_1 h + b_1)) + b_2)`` (a block of BRO's BroNet, Nauman et al.
    2024)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = _linear(width, width, "orthogonal", math.sqrt(2.0))
        self.norm1 = nn.LayerNorm(width)
        self.fc2 = _linear(width, width, "orthogonal", math.sqrt(2.0))
        self.norm2 = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.norm2(self.fc2(torch.relu(self.norm1(self.fc1(h)))))


class SimbaBlock(nn.Module):
    """``h + W_2 ReLU(W_1 LN(h) + b_1) + b_2`` with ``W_1``: width → expansion·width (SimBa's
    residual feedforward block, ``x_{l+1} = x_l + MLP(LN(x_l))``, Lee et al. 2024)."""

    def __init__(self, width: int, expansion: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = _linear(width, expansion * width, "he")
        self.fc2 = _linear(expansion * width, width, "he")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.relu(self.fc1(self.norm(h))))


class ResidualNet(TaskNet):
    """A residual LayerNorm MLP on ``[x, encoder(task)]``: ``len(hidden)`` blocks of width
    ``hidden[0]`` (all entries of ``hidden`` must be equal), ``block`` ``"bro"`` or
    ``"simba"``; see the module docstring for the equations."""

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, hidden: Sequence[int], *,
                 block: str = "bro", expansion: int = 4, task_encoder: str = "one-hot",
                 task_embedding_dim: int = 0) -> None:
        super().__init__()
        if not hidden or any(h != hidden[0] for h in hidden) or hidden[0] <= 0:
            raise ValueError(f"a residual network needs hidden sizes [w] * N (one width for the "
                             f"projection and every block), got {list(hidden)}")
        if block not in RESIDUAL_BLOCKS:
            raise ValueError(f"unknown residual block {block!r}; allowed: "
                             + ", ".join(RESIDUAL_BLOCKS))
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.block = block
        width = hidden[0]
        self.task_encoder = make_task_encoder(task_encoder, num_tasks, task_embedding_dim)
        d = in_dim + self.task_encoder.out_dim
        self.blocks: nn.ModuleList
        if block == "bro":
            self.inp = _linear(d, width, "orthogonal", math.sqrt(2.0))
            self.inp_norm: nn.Module = nn.LayerNorm(width)
            self.blocks = nn.ModuleList(BroBlock(width) for _ in hidden)
            self.final_norm: nn.Module = nn.Identity()
            self.out = _linear(width, out_dim, "orthogonal", math.sqrt(2.0))
        else:
            self.inp = _linear(d, width, "orthogonal")
            self.inp_norm = nn.Identity()
            self.blocks = nn.ModuleList(SimbaBlock(width, expansion) for _ in hidden)
            self.final_norm = nn.LayerNorm(width)
            self.out = _linear(width, out_dim, "orthogonal")

    def features(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """The representation before the output layer, ``[B, width]``."""
        h = self.inp(torch.cat([x, self.task_encoder(task_id)], dim=-1))
        if self.block == "bro":
            h = torch.relu(self.inp_norm(h))
        for blk in self.blocks:
            h = blk(h)
        return self.final_norm(h)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        return self.out(self.features(x, task_id))

