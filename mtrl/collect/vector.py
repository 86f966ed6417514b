"""The in-process collector: a MultiTaskVectorEnv stepped in this process."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mtrl.collect.base import EnvSpec, Step, Transitions
from mtrl.envs.base import MultiTaskVectorEnv


class VectorCollector:
    """Steps a :class:`~mtrl.envs.base.MultiTaskVectorEnv` in this process.

    Continuous actions come in policy space ``[-1, 1]`` and are mapped affinely to the env's
    Box bounds; discrete actions (indices) pass through unchanged. :meth:`collect` runs a policy
    for ``n`` vector steps, calling its ``observe(step)`` (if it has one) after each;
    :meth:`step` takes one vector step with given actions.
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
    def spec(self) -> EnvSpec:
        return EnvSpec.of(self.env)

    @property
    def task_ids(self) -> np.ndarray:
        return self.env.task_ids

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    @property
    def started(self) -> bool:
        return self.obs is not None

    @property
    def info(self) -> dict[str, Any]:
        """What the run's metadata records about the collector."""
        return {"name": "vector", "envs": self.num_envs}

    def reset(self, seed: int | list[int] | None = None) -> np.ndarray:
        """New episodes everywhere; ``seed``: an int, or one per sub-env, as the env's
        ``reset`` takes it (gymnasium's vector envs seed sub-env ``i`` with ``seed + i``)."""
        self.obs, _ = self.env.reset(seed=seed)
        return self.obs

    def collect(self, policy: Any, n: int) -> Transitions:
        """Run ``policy`` for ``n`` vector steps from the current observations."""
        if self.obs is None:
            raise RuntimeError("reset() the collector before collecting")
        observe = getattr(policy, "observe", None)
        steps: list[Step] = []
        for _ in range(n):
            assert self.obs is not None
            step = self.step(policy.act(self.obs, self.env.task_ids))
            if observe is not None:
                observe(step)
            steps.append(step)
        return Transitions.from_steps(steps, int(getattr(policy, "version", 0)))

    def step(self, action: np.ndarray) -> Step:
        """One vector step with ``action`` (policy space) from the current observations."""
        if self.obs is None:
            raise RuntimeError("reset() the collector before stepping it")
        env_action = action if self._identity else (
            self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        )
        next_obs, reward, terminated, truncated, info = self.env.step(env_action)
        out = Step(
            obs=self.obs,
            action=action,
            reward=reward,
            next_obs=info["final_obs"],
            terminated=terminated,
            truncated=truncated,
            task_id=self.env.task_ids,
            next_policy_obs=next_obs,
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
