"""The on-policy data path: a rollout of ``n_steps`` vector steps with the current policy into
device-resident :class:`~mtrl.data.rollout.RolloutStorage`, then one update on it (MT-A2C,
Distral-A2C, MT-PPO, whose update runs several epochs over the rollout).

The path is itself the collector's policy: ``act`` writes each observation once into its
storage slot (the tensor the agent acts on), keeps the action, ``V(s)`` and any reward bonus on
the device, and ``observe`` records what the env returned. Where an episode was cut by a time
limit, the value of its real last observation is stored for bootstrapping
(:func:`mtrl.data.rollout.bootstrap_values`). After the rollout: ``V`` of the last observation,
λ-returns, one ``agent.update``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.agents.base import Iteration, Reference
from mtrl.collect.base import Collector, Step
from mtrl.data.rollout import RolloutStorage


class RolloutDataPath:
    """See the module docstring. ``agent`` provides ``step(obs, task_id) -> (action, value,
    bonus[, log_prob])`` on device tensors (``bonus`` may be None; ``log_prob``, the acting
    policy's ``log π(a|s)``, is stored when given), ``to_env(action)``, ``value(obs, task_id)``
    and ``update(batch)``."""

    def __init__(self, agent: Any, storage: RolloutStorage, *, gamma: float, gae_lambda: float
                 ) -> None:
        self.agent = agent
        self.storage = storage
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.device = storage.device
        self._pending: tuple[torch.Tensor | None, ...] | None = None

    # ------------------------------------------------------------------ the collector's policy
    def act(self, obs: np.ndarray, task_id: np.ndarray) -> np.ndarray:
        storage = self.storage
        if not storage.started:
            storage.start(obs)
        self._pending = tuple(self.agent.step(storage.current_obs(), storage.task_id))
        return self.agent.to_env(self._pending[0])

    def observe(self, step: Step) -> None:
        assert self._pending is not None and step.next_policy_obs is not None
        action, value, bonus = self._pending[:3]
        log_prob = self._pending[3] if len(self._pending) > 3 else None
        self._pending = None
        storage = self.storage
        assert action is not None and value is not None
        storage.add(action, value, step.reward, step.terminated, step.truncated,
                    step.next_policy_obs, bonus, log_prob)
        cut = step.truncated & ~step.terminated
        if cut.any():
            # Bootstrap from the real last observation of episodes cut by a time limit.
            idx = np.flatnonzero(cut)
            obs = torch.as_tensor(step.next_obs[idx], device=self.device)
            storage.set_truncation_value(cut, self.agent.value(obs, storage.task_id[idx]))

    # ------------------------------------------------------------------ data path
    @property
    def vec_steps_per_iteration(self) -> int:
        return self.storage.num_steps

    def iterate(self, collector: Collector, vec_step: int) -> Iteration:
        storage = self.storage
        tr = collector.collect(self, storage.num_steps)
        last_value = self.agent.value(storage.current_obs(), storage.task_id)
        batch = storage.batch(last_value, self.gamma, self.gae_lambda)
        metrics = self.agent.update(batch)
        storage.after_update()
        return Iteration(tr, [metrics])

    def env_steps_at_update(self, update: int) -> int:
        return (update + 1) * self.storage.num_steps * self.storage.num_envs

    def storage_writer(self) -> Callable[[Path], Any] | None:
        return None  # a rollout is consumed by its update; nothing outlives an iteration

    def load_storage(self, path: Path) -> None:
        raise ValueError("an on-policy run keeps no storage between iterations")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def references(self) -> dict[str, Reference]:
        return {}
