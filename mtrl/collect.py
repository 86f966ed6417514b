"""Collection behind a small interface: envs in, transitions out.

The runner never touches an environment directly: it asks a collector for the current
observations, hands it actions, and receives :class:`Transitions`. The in-process
:class:`VectorCollector` steps a :class:`~mtrl.envs.MultiTaskVectorEnv`; a collector backed by
remote actors (or one that overlaps env stepping with learner updates) can replace it without
touching agents or the replay buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mtrl.envs.base import MultiTaskVectorEnv


@dataclass
class Transitions:
    """One vector step: row i is env i's transition (policy-space actions)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray  # the true next observation, also when an episode just ended
    terminated: np.ndarray  # true terminals only
    truncated: np.ndarray  # time limits (bootstrap through them)
    task_id: np.ndarray
    episode: dict[str, np.ndarray] | None = None  # return/length/success of finished episodes
    episode_mask: np.ndarray | None = None  # which envs finished an episode on this step


class VectorCollector:
    """Steps a MultiTaskVectorEnv in this process.

    Continuous actions come in policy space ``[-1, 1]`` and are mapped affinely to the env's
    Box bounds; discrete actions (indices) pass through unchanged.
    """

    def __init__(self, env: MultiTaskVectorEnv) -> None:
        self.env = env
        space: Any = env.single_action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if self.discrete:
            self._low = self._high = np.zeros(0, dtype=np.float32)
            self._identity = True
        else:
            self._low = np.asarray(space.low, dtype=np.float32)
            self._high = np.asarray(space.high, dtype=np.float32)
            self._identity = bool(np.all(self._low == -1.0) and np.all(self._high == 1.0))
        self.obs: np.ndarray | None = None

    @property
    def task_ids(self) -> np.ndarray:
        return self.env.task_ids

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.obs, _ = self.env.reset(seed=seed)
        return self.obs

    def step(self, action: np.ndarray) -> Transitions:
        if self.obs is None:
            raise RuntimeError("reset() the collector before stepping it")
        env_action = action if self._identity else (
            self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        )
        next_obs, reward, terminated, truncated, info = self.env.step(env_action)
        out = Transitions(
            obs=self.obs,
            action=action,
            reward=reward,
            next_obs=info["final_obs"],
            terminated=terminated,
            truncated=truncated,
            task_id=self.env.task_ids,
            episode=info.get("episode"),
            episode_mask=info.get("_episode"),
        )
        self.obs = next_obs
        return out

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"env": self.env.state_dict()}
        if self.obs is not None:
            state["obs"] = torch.from_numpy(np.ascontiguousarray(self.obs))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore env state; resume the exact episodes in progress where the env can
        (toy envs), otherwise start new episodes on the restored random streams (Meta-World)."""
        self.env.load_state_dict(state["env"])
        if self.env.restores_exactly and "obs" in state:
            self.obs = state["obs"].numpy().copy()
        else:
            self.obs, _ = self.env.reset()

    def close(self) -> None:
        self.env.close()
