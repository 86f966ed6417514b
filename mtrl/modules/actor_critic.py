"""Actor-critic networks for on-policy agents (A2C): a torso, a task-conditioned policy head
and a task-conditioned value head, for discrete (categorical) and continuous (Gaussian) actions.

* **Torso**: :class:`~mtrl.modules.cnn.NatureCNN` for ``[C, H, W]`` pixel observations, shared by
  policy and value as in Mnih et al. 2016 (A3C, Sec. 5.1/8); for flat observations the heads read
  the observation directly (separate policy and value networks).
* **Heads**: any task-conditioned architecture of :mod:`mtrl.modules.nets` (``mlp``: one shared
  head on ``[features, one_hot(task)]``; ``multihead``: a shared trunk and one output layer per
  task; soft modularization, routing, mixture of experts).
* **Value with PopArt** (Hessel et al. 2019, "Multi-task Deep Reinforcement Learning with
  PopArt", Sec. 3): the value network ends in a :class:`~mtrl.modules.popart.PopArtHead` with one
  normalized output per task, ``V_k(s) = σ_k n_k(s) + μ_k``.

Distributions are handled by small functions rather than ``torch.distributions`` objects so that
no argument validation (host synchronization) happens per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtrl.modules.cnn import make_torso, torso_input
from mtrl.modules.distributions import categorical_sample, gaussian_log_prob
from mtrl.modules.nets import TaskNet, build_net
from mtrl.modules.popart import PopArtHead, PopArtStatistics

_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


class TaskLogStd(nn.Module):
    """State-independent log standard deviation of a Gaussian policy, one vector per task
    (``[num_tasks, action_dim]``, initialized to ``init``). Task-specific: task ``k``'s row gets
    gradient only from task ``k``'s samples, and gradient combiners leave it alone."""

    mtrl_task_specific = True

    def __init__(self, num_tasks: int, action_dim: int, init: float = 0.0) -> None:
        super().__init__()
        self.log_std = nn.Parameter(torch.full((num_tasks, action_dim), float(init)))

    def forward(self, task_id: torch.Tensor) -> torch.Tensor:
        return self.log_std.index_select(0, task_id)


class ActorCritic(nn.Module):
    """``forward(obs, task_id, per_task) -> (policy_out, value_out)``.

    ``policy_out``: logits ``[B, num_actions]`` (discrete) or Gaussian means ``[B, action_dim]``
    (continuous; the log-std comes from :meth:`log_std`). ``value_out``: ``[B]``, the
    *normalized* value ``n_k(s)`` with PopArt, the value ``V(s)`` otherwise; :meth:`value`
    always returns ``V(s)`` in reward units.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        num_tasks: int,
        *,
        num_actions: int | None = None,
        action_dim: int | None = None,
        actor_hidden: Sequence[int] = (64, 64),
        critic_hidden: Sequence[int] = (64, 64),
        actor_arch: str = "mlp",
        critic_arch: str = "mlp",
        arch_cfg: object | None = None,
        torso: str = "auto",
        popart: PopArtStatistics | None = None,
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        if (num_actions is None) == (action_dim is None):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (Gaussian)")
        self.obs_shape = tuple(obs_shape)
        self.num_tasks = num_tasks
        self.discrete = num_actions is not None
        out = num_actions if num_actions is not None else action_dim
        assert out is not None
        self.num_outputs = out
        self.torso, feat = make_torso(self.obs_shape, torso)
        self.policy: TaskNet = build_net(actor_arch, feat, out, num_tasks, list(actor_hidden),
                                         arch_cfg)
        self.log_std_net = (
            None if self.discrete else TaskLogStd(num_tasks, out, init_log_std)
        )
        self.popart = popart
        self.value_trunk: TaskNet | None = None
        self.value_head: PopArtHead | None = None
        self.value_net: TaskNet | None = None
        if popart is not None:
            if popart.num_tasks != num_tasks:
                raise ValueError("PopArt statistics and network have different task counts")
            hidden = list(critic_hidden)
            if hidden:
                self.value_trunk = build_net(critic_arch, feat, hidden[-1], num_tasks,
                                             hidden[:-1], arch_cfg)
            self.value_head = PopArtHead(hidden[-1] if hidden else feat, num_tasks, stats=popart)
        else:
            self.value_net = build_net(critic_arch, feat, 1, num_tasks, list(critic_hidden),
                                       arch_cfg)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.torso(torso_input(self.torso, obs))

    def forward(
        self, obs: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(obs)
        return self.policy(h, task_id, per_task), self._value_out(h, task_id, per_task)

    def _value_out(self, h: torch.Tensor, task_id: torch.Tensor, per_task: int | None
                   ) -> torch.Tensor:
        if self.value_head is not None:
            return self.value_head(self.value_features(h, task_id, per_task), task_id)
        assert self.value_net is not None
        return self.value_net(h, task_id, per_task).squeeze(-1)

    def value_features(self, h: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                       ) -> torch.Tensor:
        """PopArt only: the input of the value head for the torso features ``h`` (the value
        trunk's ReLU output, or ``h`` itself without hidden value layers). A learner that
        rescales the head after a forward pass applies the rescaled head to these again."""
        if self.value_trunk is not None:
            return torch.relu(self.value_trunk(h, task_id, per_task))
        return h

    def unnormalize(self, value_out: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``V`` from the value output of :meth:`forward` (identity without PopArt)."""
        if self.popart is None:
            return value_out
        return self.popart.denormalize_ids(value_out, task_id)

    def value(self, obs: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """``V(s)`` in reward units, ``[B]``."""
        return self.unnormalize(self._value_out(self.features(obs), task_id, None), task_id)

    def log_std(self, task_id: torch.Tensor) -> torch.Tensor:
        assert self.log_std_net is not None
        return self.log_std_net(task_id)

    # ------------------------------------------------------------------ distributions
    def sample(self, policy_out: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """An action from π(·|s): Gumbel-max for categorical (no host sync), ``μ + σ ε`` for
        Gaussian (unclipped; clip to the action bounds only when sending it to the env)."""
        if self.discrete:
            return categorical_sample(policy_out)
        return policy_out + self.log_std(task_id).exp() * torch.randn_like(policy_out)

    def mode(self, policy_out: torch.Tensor) -> torch.Tensor:
        return policy_out.argmax(-1) if self.discrete else policy_out

    def log_prob_entropy(
        self, policy_out: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log π(a|s)`` and the entropy ``H[π(·|s)]``, each ``[B]``."""
        if self.discrete:
            logp = F.log_softmax(policy_out, dim=-1)
            lp = logp.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
            ent = -(logp.exp() * logp).sum(-1)
            return lp, ent
        log_std = self.log_std(task_id)
        lp = gaussian_log_prob(action, policy_out, log_std)
        ent = (log_std + _HALF_LOG_2PI_E).sum(-1)
        return lp, ent

    def report(self) -> dict[str, torch.Tensor]:
        return self.policy.report()
