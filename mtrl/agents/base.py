"""The contracts between agents and the rest of mtrl.

* :class:`PolicyOutput`: a policy's distribution parameters (what a distillation teacher reads);
* :class:`EnvSpec`: what an agent's data path knows about the envs (spaces, tasks);
* :class:`DataPath`: how an agent turns interaction into updates (:meth:`DataPath.iterate`);
  the training loop (:mod:`mtrl.runner`) is the same for every agent because all it does is
  call it, log, evaluate and checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from mtrl.collect.base import Collector, EnvSpec, Transitions  # noqa: F401  (EnvSpec: re-exported)


@dataclass
class PolicyOutput:
    """A policy's distribution parameters for a batch of observations.

    ``logits``: discrete ``[B, A]`` action preferences (policy logits, or Q-values for a
    Q-network). ``mean`` / ``log_std``: continuous ``[B, D]`` Gaussian parameters (pre-tanh for
    squashed policies). ``features``: the policy's penultimate features ``[B, F]`` (what
    Actor-Mimic regresses onto), or None."""

    logits: Tensor | None = None
    mean: Tensor | None = None
    log_std: Tensor | None = None
    features: Tensor | None = None


class TaskIds:
    """Host task ids → a device tensor, cached: the task of each env never changes, so acting
    on the same envs reuses one tensor instead of a host-to-device copy per step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cache: tuple[bytes, Tensor] | None = None

    def __call__(self, task_id: np.ndarray) -> Tensor:
        ids = np.asarray(task_id, dtype=np.int64)
        key = ids.tobytes()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, torch.as_tensor(ids, device=self.device))
        return self._cache[1]

    def clear(self) -> None:
        self._cache = None


def env_actions(action: Tensor, discrete: bool) -> np.ndarray:
    """Device actions of an on-policy agent → what the env takes: int64 indices, or Gaussian
    samples clipped to the policy space [-1, 1] (log-probabilities are of the unclipped
    sample)."""
    if discrete:
        return action.cpu().numpy().astype(np.int64)
    return action.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)


class Actor(Protocol):
    """Anything that acts: agents, Distral's π0, distillation teachers."""

    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False
            ) -> np.ndarray: ...


class NonFiniteActionError(RuntimeError):
    """The acting policy produced NaN or infinite actions."""


@dataclass
class Iteration:
    """What one iteration of an agent's data path did: the transitions it collected and the
    metrics of each update it ran (device tensors, possibly none)."""

    transitions: Transitions
    metrics: list[dict[str, Tensor]] = field(default_factory=list)


@dataclass
class Reference:
    """A policy evaluated once, at the start of a run, as the yardstick of the agent (the
    teachers of a distillation run): ``eval/<name>/...`` and ``eval/<name>s.json``."""

    actor: Actor
    info: dict[str, Any] = field(default_factory=dict)


class DataPath(Protocol):
    """How an agent learns from interaction: which policy acts (warm-up, exploration, teacher
    mixing), what storage it fills and how, and when it updates. The training loop calls
    :meth:`iterate` until the budget is spent and knows nothing else about the agent."""

    agent: Any

    @property
    def vec_steps_per_iteration(self) -> int:
        """Vector steps one :meth:`iterate` collects (a run ends on a whole iteration)."""
        ...

    def iterate(self, collector: Collector, vec_step: int) -> Iteration:
        """Collect (from vector step ``vec_step`` on) and update once per the agent's rules."""
        ...

    def env_steps_at_update(self, update: int) -> int:
        """About how many env steps had been taken when update ``update`` (0-based) ran."""
        ...

    def storage_writer(self) -> Callable[[Path], Any] | None:
        """A function that saves the storage next to a checkpoint (None: nothing to save)."""
        ...

    def load_storage(self, path: Path) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def references(self) -> dict[str, Reference]: ...


class ActorCriticAgentParts:
    """What MT-A2C, MT-PPO and MT-IMPALA share around their losses: an :class:`ActorCritic` ``net``
    with its ``optim`` and ``combiner`` — per-task metrics, reports, persistence, modes."""

    net: Any
    optim: Any
    combiner: Any
    _task_ids: TaskIds

    def task_metrics(self) -> dict[str, torch.Tensor]:
        """Per-task ``popart/mu`` and ``popart/sigma`` with PopArt, the Gaussian policy's mean
        ``policy_std`` for continuous actions."""
        out: dict[str, torch.Tensor] = {}
        if self.net.popart is not None:
            out["popart/mu"] = self.net.popart.mu.detach().clone()
            out["popart/sigma"] = self.net.popart.sigma.detach().clone()
        if self.net.log_std_net is not None:
            out["policy_std"] = self.net.log_std_net.log_std.detach().exp().mean(1)
        return out

    def architecture_reports(self) -> dict[str, dict[str, torch.Tensor]]:
        reports = {"policy": self.net.policy.report()}
        value = self.net.value_net or self.net.value_trunk
        if value is not None:
            reports["value"] = value.report()
        return reports

    def combiner_reports(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"actor_critic": self.combiner.report()}

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optim": self.optim.state_dict(),
                "combiner": self.combiner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optim.load_state_dict(state["optim"])
        self.combiner.load_state_dict(state["combiner"])
        self._task_ids.clear()

    def train(self) -> None:
        self.net.train()

    def eval(self) -> None:
        self.net.eval()
