"""Task-conditioned networks: every architecture maps ``(x [B, in], task_id [B]) → [B, out]``.

Actors and critics are built from these (``build_net``), so any agent can use any architecture
through the config. ``per_task`` tells a network that the rows are task-stratified and
task-major (``per_task`` rows of task 0, then task 1, …), as in every training batch of mtrl;
architectures with per-task parameters then apply them with one batched matmul on the
``[T, per_task, ·]`` view instead of gathering a weight matrix per row. Acting and evaluation
pass ``per_task=None`` (arbitrary task ids).

Networks that route or mix (soft modularization, mixture of experts) keep the routing weights of
their last stratified forward pass and return their per-task means from ``report()``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mtrl.modules.mlp import mlp
from mtrl.modules.task_encoding import make_task_encoder
from mtrl.registry import ARCHITECTURES, register_architecture


class TaskNet(nn.Module):
    """Base class: ``forward(x, task_id, per_task=None) -> [B, out_dim]``."""

    in_dim: int
    out_dim: int
    num_tasks: int

    def report(self) -> dict[str, torch.Tensor]:
        """Per-task diagnostics of the last training forward pass (routing/gating weights)."""
        return {}


class MLPNet(TaskNet):
    """The MT-SAC network: an MLP on ``[x, encoder(task)]`` (Yu et al. 2019, Sec. 5)."""

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, hidden: Sequence[int],
                 task_encoder: str = "one-hot", task_embedding_dim: int = 0) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.task_encoder = make_task_encoder(task_encoder, num_tasks, task_embedding_dim)
        self.net = mlp(in_dim + self.task_encoder.out_dim, hidden, out_dim)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        return self.net(torch.cat([x, self.task_encoder(task_id)], dim=-1))


class MultiHeadLinear(nn.Module):
    """One linear output layer per task, stacked as ``weight [T, in, out]`` and ``bias [T, out]``
    (initialized like ``nn.Linear``). On a task-stratified batch the heads are applied with one
    ``baddbmm`` on ``x.view(T, per_task, in)``; otherwise each row gathers its task's head.
    Either way task ``k``'s head receives gradient only from task ``k``'s rows, and gradient
    combiners treat it as task-specific."""

    mtrl_task_specific = True

    def __init__(self, num_tasks: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_tasks, self.in_features, self.out_features = num_tasks, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_tasks, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_tasks, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        if per_task is not None:
            xt = x.view(self.num_tasks, per_task, self.in_features)
            out = torch.baddbmm(self.bias.unsqueeze(1), xt, self.weight)
            return out.reshape(-1, self.out_features)
        w = self.weight.index_select(0, task_id)  # [B, in, out]
        return torch.bmm(x.unsqueeze(1), w).squeeze(1) + self.bias.index_select(0, task_id)

    def extra_repr(self) -> str:
        return f"tasks={self.num_tasks}, in={self.in_features}, out={self.out_features}"


class MultiHeadNet(TaskNet):
    """MH-SAC network: a shared trunk on ``[x, encoder(task)]`` and one output head per task
    (the multi-head baseline of Yu et al. 2019, Sec. 5, and Meta-World+'s MTMHSAC)."""

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, hidden: Sequence[int],
                 task_encoder: str = "one-hot", task_embedding_dim: int = 0) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.task_encoder = make_task_encoder(task_encoder, num_tasks, task_embedding_dim)
        d = in_dim + self.task_encoder.out_dim
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.trunk = nn.Sequential(*layers)
        self.heads = MultiHeadLinear(num_tasks, d, out_dim)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        h = self.trunk(torch.cat([x, self.task_encoder(task_id)], dim=-1))
        return self.heads(h, task_id, per_task)


class SeparateNet(TaskNet):
    """One independent MLP per task (no shared parameters): every layer is a
    :class:`MultiHeadLinear`, so the ``T`` networks run as one batched matmul per layer. The
    "separate networks" baseline of multi-task RL, and the task policies of Distral (Teh et al.
    2017, Sec. 2: one network per task, regularized only through the distilled policy)."""

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(
            MultiHeadLinear(num_tasks, a, b) for a, b in itertools.pairwise(dims)
        )

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i:
                x = torch.relu(x)
            x = layer(x, task_id, per_task)
        return x


def build_net(arch: str, in_dim: int, out_dim: int, num_tasks: int, hidden: Sequence[int],
              cfg: object | None = None) -> TaskNet:
    """The registered architecture ``arch`` (:data:`mtrl.registry.ARCHITECTURES`) with sizes
    from ``hidden`` (mlp, multihead, separate) and from an :class:`~mtrl.config.ArchConfig`
    ``cfg`` (everything else)."""
    from mtrl.config import ArchConfig
    from mtrl.errors import ConfigError

    c = cfg if isinstance(cfg, ArchConfig) else ArchConfig()
    try:
        entry = ARCHITECTURES.get(arch, "architecture")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return entry.build(in_dim, out_dim, num_tasks, list(hidden), c)


# ----------------------------------------------------------------------------------------------
# Registration of the built-in architectures


@register_architecture("mlp")
def _mlp(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    return MLPNet(in_dim, out_dim, num_tasks, hidden, c.task_encoder, c.task_embedding_dim)


@register_architecture("multihead")
def _multihead(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    return MultiHeadNet(in_dim, out_dim, num_tasks, hidden, c.task_encoder,
                        c.task_embedding_dim)


@register_architecture("separate")
def _separate(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    return SeparateNet(in_dim, out_dim, num_tasks, hidden)


@register_architecture("soft-modular")
def _soft_modular(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any
                  ) -> TaskNet:
    from mtrl.modules.soft_modular import SoftModularNet

    return SoftModularNet(
        in_dim, out_dim, num_tasks,
        num_layers=c.num_layers, num_modules=c.num_modules, module_dim=c.module_dim,
        embedding_dim=c.embedding_dim, routing_dim=c.routing_dim,
    )


@register_architecture("routing")
def _routing(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    from mtrl.modules.routing import RoutingNet

    return RoutingNet(
        in_dim, out_dim, num_tasks, depth=c.router_depth, num_modules=c.router_modules,
        module_dim=c.module_dim, allow_pass=c.router_pass, mode=c.router_mode,
        temperature=c.router_temperature, diversity=c.router_diversity,
        task_input=c.router_task_input,
    )


@register_architecture("moe")
def _moe(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    from mtrl.modules.moe import MixtureOfExpertsNet

    return MixtureOfExpertsNet(
        in_dim, out_dim, num_tasks, hidden,
        num_experts=c.num_experts, expert_hidden=list(c.expert_hidden), gating=c.gating,
        task_encoder=c.task_encoder, task_embedding_dim=c.task_embedding_dim,
    )


@register_architecture("moore")
def _moore(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    from mtrl.modules.moore import MooreNet

    return MooreNet(in_dim, out_dim, num_tasks, hidden, num_experts=c.num_experts,
                    multihead=c.moore_multihead)


@register_architecture("residual")
def _residual(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    from mtrl.modules.residual import ResidualNet

    return ResidualNet(in_dim, out_dim, num_tasks, hidden, block=c.residual_block,
                       expansion=c.residual_expansion, task_encoder=c.task_encoder,
                       task_embedding_dim=c.task_embedding_dim)


@register_architecture("paco")
def _paco(in_dim: int, out_dim: int, num_tasks: int, hidden: list[int], c: Any) -> TaskNet:
    from mtrl.modules.paco import PaCoNet

    return PaCoNet(in_dim, out_dim, num_tasks, hidden, num_params=c.paco_num_params,
                   identical_init=c.paco_identical_init)
