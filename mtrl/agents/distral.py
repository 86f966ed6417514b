"""Distral: a distilled policy π0 and task policies πi regularized toward it.

Teh et al. 2017, "Distral: Robust Multitask Reinforcement Learning" (NeurIPS). The objective
(Eq. 1, rewritten in Eq. 2) of task policies ``πi`` and a shared distilled policy ``π0``:

    J(π0, {πi}) = Σ_i E_πi[ Σ_t γ^t r_i − c_KL γ^t log(πi(a_t|s_t) / π0(a_t|s_t))
                                          − c_Ent γ^t log πi(a_t|s_t) ]
                = Σ_i E_πi[ Σ_t γ^t r_i + (γ^t α/β) log π0(a_t|s_t) − (γ^t/β) log πi(a_t|s_t) ]

with ``α = c_KL / (c_KL + c_Ent) ∈ [0, 1]`` and ``β = 1 / (c_KL + c_Ent)``. For fixed π0 every
task is an ordinary RL problem with the *regularized reward*

    r̃ = r + (α/β) log π0(a|s) − (1/β) log πi(a|s)                         (:func:`reward_bonus`)

``α = 1`` (``c_Ent = 0``) is the **KL-only** variant (the paper's "KL" curves); ``α < 1`` adds
an entropy bonus ("KL+ent"). For fixed πi, π0's part of ``J`` is ``(α/β) Σ_i E_πi[log π0(a|s)]``:
π0 is the *distillation* of the task policies, trained by moving it toward each πi on πi's own
state distribution. Its gradient ``(α/β) E_s Σ_a (πi(a|s) − π0(a|s)) ∇h(a|s)`` (the
distillation term of the π0 gradient in Sec. 2.3) is the gradient of ``−(α/β) KL(πi ‖ π0)``
with πi held fixed, which is the loss used here (:func:`categorical_kl`, :func:`gaussian_kl`).

Two parameterizations of the task policies (Sec. 2.3):

* **one column** (``columns=1``): πi has its own network, with logits ``f_i(s)``;
* **two columns** (``columns=2``, discrete actions): π0 has logits ``h(s)`` and the task
  policy is ``π̂i(a|s) ∝ π̂0(a|s)^α exp(β f_i(a|s))``, i.e. its logits are ``α h(s) + β f_i(s)``
  (:func:`two_column_logits`); the task policies' policy gradient then reaches ``h`` too. The
  task column's network outputs ``β f_i`` rather than ``f_i``: the same policies, but a
  gradient step does not move the logits β times further (docs/NOTES.md).

The agents carry a :class:`Distral` part: ``MTA2C`` (discrete and Gaussian actions; the bonus
enters the rollout rewards, so the λ-returns and the value function are the regularized ones)
and ``MTSAC`` (continuous; the bonus enters the soft Q target and the actor loss, as the
SAC-based Distral of facebookresearch/mtrl). Task policies act during training; evaluation
reports the task policies and π0 separately (:class:`Pi0Actor`). As in most implementations,
the ``γ^t`` weighting of the state distribution is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mtrl.modules.cnn import make_torso, torso_input
from mtrl.modules.distributions import (  # noqa: F401  (part of this module's API)
    categorical_kl,
    gaussian_kl,
    gaussian_log_prob,
)
from mtrl.modules.mlp import mlp
from mtrl.modules.nets import build_net


@dataclass
class DistralHyperparams:
    """``alpha`` (α ∈ [0, 1]) and ``beta`` (β > 0) as in Teh et al. 2017, Eq. 2; ``columns``:
    1 (separate task policies) or 2 (task logits ``α h + β f_i``, discrete actions)."""

    alpha: float = 0.5
    beta: float = 100.0
    columns: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distral alpha={self.alpha} must be in [0, 1]")
        if not self.beta > 0.0:
            raise ValueError(f"distral beta={self.beta} must be > 0")
        if self.columns not in (1, 2):
            raise ValueError(f"distral columns={self.columns} must be 1 or 2")

    @property
    def kl_coef(self) -> float:
        """``c_KL = α/β``: the weight of ``log π0`` in the regularized reward."""
        return self.alpha / self.beta

    @property
    def ent_coef(self) -> float:
        """``c_Ent = (1 − α)/β``."""
        return (1.0 - self.alpha) / self.beta

    @property
    def temperature(self) -> float:
        """``1/β = c_KL + c_Ent``: the weight of ``−log πi`` in the regularized reward."""
        return 1.0 / self.beta


# ------------------------------------------------------------------------------- equations


def reward_bonus(logp_task: torch.Tensor, logp_pi0: torch.Tensor, hp: DistralHyperparams
                 ) -> torch.Tensor:
    """``(α/β) log π0(a|s) − (1/β) log πi(a|s)``, added to the env reward (Eq. 2)."""
    return hp.kl_coef * logp_pi0 - hp.temperature * logp_task


def two_column_logits(h: torch.Tensor, f: torch.Tensor, hp: DistralHyperparams) -> torch.Tensor:
    """Task-policy logits of the two-column parameterization, ``α h + β f_i`` (Sec. 2.3)."""
    return hp.alpha * h + hp.beta * f


# ------------------------------------------------------------------------------- π0


class DistilledPolicy(nn.Module):
    """π0: categorical logits ``h(s)`` ``[B, A]`` (``num_actions``) or a Gaussian's mean and
    log-std ``([B, D], [B, D])`` (``action_dim``; pre-tanh for SAC, whose π0 is squashed like
    its task policies). As in Distral, π0 is *shared*: by default it does not see the task id
    (``task_input=False``); with ``task_input=True`` it is an MLP on ``[obs, one_hot(task)]``.
    Image observations get their own Nature CNN torso."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        num_tasks: int,
        *,
        num_actions: int | None = None,
        action_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        task_input: bool = False,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        arch_cfg: object | None = None,
    ) -> None:
        super().__init__()
        if (num_actions is None) == (action_dim is None):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (Gaussian)")
        self.discrete = num_actions is not None
        self.num_tasks = num_tasks
        self.action_dim = action_dim or 0
        out = num_actions if num_actions is not None else 2 * (action_dim or 0)
        self.torso, feat = make_torso(obs_shape)
        self.task_input = task_input
        self.body: nn.Module = (build_net("mlp", feat, out, num_tasks, list(hidden), arch_cfg)
                                if task_input else mlp(feat, list(hidden), out))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
                ) -> Any:
        x = self.torso(torso_input(self.torso, obs))
        out = self.body(x, task_id, per_task) if self.task_input else self.body(x)
        if self.discrete:
            return out
        mean, log_std = out.split(self.action_dim, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)


class Distral:
    """The Distral part of an agent: π0, its hyperparameters and (SAC) its optimizer.
    ``MTA2C`` puts π0's parameters into its own optimizer; ``MTSAC`` gives π0 ``optim``."""

    def __init__(self, pi0: DistilledPolicy, hp: DistralHyperparams,
                 optim: torch.optim.Optimizer | None = None) -> None:
        if hp.columns == 2 and not pi0.discrete:
            raise ValueError("the two-column Distral needs discrete actions; use columns=1")
        self.pi0 = pi0
        self.hp = hp
        self.optim = optim

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pi0": self.pi0.state_dict()}
        if self.optim is not None:
            out["optim"] = self.optim.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pi0.load_state_dict(state["pi0"])
        if self.optim is not None:
            self.optim.load_state_dict(state["optim"])


class Pi0Actor:
    """Acts with an agent's distilled policy π0 (for evaluation): the categorical's most likely
    action or ``tanh(μ0)`` / ``clip(μ0)`` deterministically, a sample otherwise."""

    def __init__(self, agent: Any) -> None:
        if getattr(agent, "distral", None) is None:
            raise ValueError("this agent has no distilled policy π0")
        self.agent = agent

    @torch.no_grad()
    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.agent.act_pi0(obs, task_id, deterministic)
