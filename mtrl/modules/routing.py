"""Routing networks (Rosenbaum, Klinger & Riemer 2018, "Routing Networks: Adaptive Selection of
Non-linear Functions for Multi-Task Learning", ICLR).

A shared input layer maps ``x`` to ``d`` units; then, at each of ``L`` depths, a *router* picks one
function block from that depth's set — ``k`` modules ``ReLU(W_j h + b_j)`` (stacked ``[k, d, d]``)
and, optionally, PASS (identity, the paper's "skip") — and a linear layer maps the result to the
output. The router here is the paper's task-conditioned router, one policy per task and depth
(their multi-agent "one agent per task" dispatching): logits ``[L, T, k (+1)]``, zero-initialized
(uniform choice at the start).

Training the router (``mode``):

* ``reinforce`` (the paper, Sec. 3.2–3.3): every sample draws its route ``c ~ π(·|task)``; the
  router is an RL agent whose reward is the negative loss of that sample (final reward only,
  no collaboration reward), trained with REINFORCE and a per-task mean baseline:
  ``L_router = −E[(r − b_task) Σ_d log π(c_d | task)]`` (:meth:`router_loss`, added by the agent
  next to its own loss). The modules get ordinary gradients through the chosen path.
* ``gumbel``: a straight-through Gumbel-softmax relaxation (Jang et al. 2017) — hard one-hot
  choices in the forward pass, gradients of the soft sample to the logits — a common switch to a
  fully differentiable router.

Deviation, on by default (``task_input``): the input layer also sees the one-hot task, as in
every other mtrl architecture. In the paper only the routers see the task; in RL the
per-sample loss differences between routes are small against the noise of TD targets and the
REINFORCE routers stay near uniform for a long time, while modules that never see the task
cannot tell the tasks apart (docs/NOTES.md). ``task_input=False`` gives the paper's network.

Module collapse (every task routing through one module) is the known failure mode; ``report()``
returns each task's module usage per depth (logged as images and per-task entropies), and
``diversity`` > 0 adds ``−diversity · H(π(·|task, depth))`` to the router loss (an entropy bonus
keeping routes exploratory). In ``eval()`` mode the router is greedy (argmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtrl.modules.mlp import EnsembleLinear
from mtrl.modules.nets import TaskNet
from mtrl.modules.task_encoding import OneHotTaskEncoder

ROUTER_MODES = ("reinforce", "gumbel")


class RouterLogits(nn.Module):
    """Per-task, per-depth choice logits ``[L, T, C]``; task ``k``'s rows move only with task
    ``k``'s samples (task-specific parameters)."""

    mtrl_task_specific = True

    def __init__(self, depth: int, num_tasks: int, num_choices: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(depth, num_tasks, num_choices))


class RoutingNet(TaskNet):
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        *,
        depth: int = 3,
        num_modules: int = 4,
        module_dim: int = 256,
        allow_pass: bool = True,
        mode: str = "reinforce",
        temperature: float = 1.0,
        diversity: float = 0.0,
        task_input: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ROUTER_MODES:
            raise ValueError(f"unknown router mode {mode!r}; allowed: {', '.join(ROUTER_MODES)}")
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.depth, self.num_modules, self.allow_pass = depth, num_modules, allow_pass
        self.mode, self.temperature, self.diversity = mode, temperature, diversity
        self.num_choices = num_modules + int(allow_pass)
        self.task_input = task_input
        self.task_encoder = OneHotTaskEncoder(num_tasks)
        self.inp = nn.Linear(in_dim + (num_tasks if task_input else 0), module_dim)
        self.blocks = nn.ModuleList(
            EnsembleLinear(num_modules, module_dim, module_dim) for _ in range(depth)
        )
        self.router = RouterLogits(depth, num_tasks, self.num_choices)
        self.out = nn.Linear(module_dim, out_dim)
        self._log_prob: torch.Tensor | None = None  # [B] Σ_d log π(c_d), reinforce mode
        self._entropy: torch.Tensor | None = None
        self._task_id: torch.Tensor | None = None
        self._usage: torch.Tensor | None = None  # [L, B, C] one-hot choices of the last batch
        self._per_task: int | None = None

    def policy(self, task_id: torch.Tensor) -> torch.Tensor:
        """``π(·|task, depth)`` for every row: ``[L, B, C]``."""
        return torch.softmax(self.router.logits[:, task_id], dim=-1)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> torch.Tensor:
        if self.task_input:
            x = torch.cat([x, self.task_encoder(task_id)], dim=-1)
        h = torch.relu(self.inp(x))
        logits = self.router.logits[:, task_id]  # [L, B, C]
        if not self.training:
            choice = F.one_hot(logits.argmax(-1), self.num_choices).to(h.dtype)
        elif self.mode == "gumbel":
            choice = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)
        else:
            idx = torch.distributions.Categorical(logits=logits).sample()
            choice = F.one_hot(idx, self.num_choices).to(h.dtype)
            if torch.is_grad_enabled():
                logp = torch.log_softmax(logits, dim=-1)
                self._log_prob = (logp * choice).sum(-1).sum(0)
                self._entropy = -(logp.exp() * logp).sum(-1).mean(0)
                self._task_id = task_id
        for d, block in enumerate(self.blocks):
            outs = torch.relu(block(h))  # [k, B, d]
            if self.allow_pass:
                outs = torch.cat([outs, h.unsqueeze(0)], dim=0)
            h = torch.einsum("bc,cbd->bd", choice[d], outs)
        if per_task is not None:
            self._usage, self._per_task = choice.detach(), per_task
        return self.out(h)

    def router_loss(self, per_sample_loss: torch.Tensor) -> torch.Tensor:
        """REINFORCE loss of the router for the last forward pass, with reward ``−loss`` per
        sample and a per-task mean baseline (0 in ``gumbel`` mode, where the router is trained
        by the task loss itself). Consumes the stored log-probabilities."""
        if self.mode != "reinforce" or self._log_prob is None or self._task_id is None:
            return per_sample_loss.new_zeros(())
        reward = -per_sample_loss.detach()
        tid = self._task_id
        counts = torch.bincount(tid, minlength=self.num_tasks).clamp_min(1).to(reward.dtype)
        baseline = torch.zeros(self.num_tasks, dtype=reward.dtype, device=reward.device)
        baseline = baseline.index_add(0, tid, reward) / counts
        advantage = reward - baseline.index_select(0, tid)
        loss = -(advantage * self._log_prob).mean()
        if self.diversity > 0 and self._entropy is not None:
            loss = loss - self.diversity * self._entropy.mean()
        self._log_prob = self._entropy = self._task_id = None
        return loss

    def report(self) -> dict[str, torch.Tensor]:
        """Each task's module usage per depth in the last training batch: ``depth<d>`` →
        ``[T, C]`` (columns: modules, then PASS)."""
        if self._usage is None or self._per_task is None:
            return {}
        u = self._usage.view(self.depth, self.num_tasks, self._per_task, -1).mean(2)
        return {f"depth{d + 1}": u[d] for d in range(self.depth)}


def routed_nets(module: nn.Module) -> Sequence[RoutingNet]:
    """The routing networks inside ``module`` (for agents adding their router losses)."""
    return [m for m in module.modules() if isinstance(m, RoutingNet)]
