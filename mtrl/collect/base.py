"""The collector seam: envs in, transitions out.

A collector owns the env state it needs and, asked by the training loop, runs a policy for
``n`` vector steps: ``collect(policy, n) -> Transitions``. The loop and the agents never step an
environment themselves, so an in-process vector env (:class:`~mtrl.collect.VectorCollector`), a
pipelined one or remote env runners are interchangeable behind this seam.

A *policy* is anything with ``act(obs, task_id) -> actions`` on numpy arrays (actions in policy
space: ``[-1, 1]`` for continuous actions, indices for discrete ones). A policy may also have
``observe(step)``: in-process collectors call it after every vector step with that step's
:class:`Step`, so that an on-policy agent can keep its rollout on its device as it goes; a remote
collector, which cannot, returns the same information in the :class:`Transitions` chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from mtrl.envs.base import MultiTaskVectorEnv


@dataclass
class EnvSpec:
    """What an agent's data path needs to know about the envs it learns from (no env
    objects: remote collectors leave the learner without one)."""

    task_names: list[str]
    task_ids: np.ndarray  # [num_envs], the task of each env
    obs_space: gym.Space[Any]
    action_space: gym.Space[Any]
    benchmark: dict[str, Any] = field(default_factory=dict)
    teacher_action_maps: dict[str, list[int]] = field(default_factory=dict)
    """Per task, the env actions of a teacher trained on a smaller native action set (an Atari
    game's minimal set), for distillation; empty where the env has none."""
    score_fn: Callable[[str, float], float] | None = None
    """The benchmark's normalized score of an episode return (Atari: human-normalized)."""

    @property
    def num_envs(self) -> int:
        return int(self.task_ids.shape[0])

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.obs_space.shape or ())

    @property
    def obs_dtype(self) -> torch.dtype:
        return torch.uint8 if self.obs_space.dtype == np.uint8 else torch.float32

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    @property
    def action_dim(self) -> int:
        return int(np.prod(self.action_space.shape or ()))


    @property
    def has_success(self) -> bool:
        """Whether episodes report a success flag (Meta-World, toys; not Atari)."""
        return bool(self.benchmark.get("has_success", True))

    @staticmethod
    def of(env: MultiTaskVectorEnv) -> EnvSpec:
        """The spec of an env object."""
        maps = {}
        for t in env.task_names:
            native = env.native_action_set(t)
            if native is not None:
                maps[t] = native
        return EnvSpec(list(env.task_names), np.asarray(env.task_ids, dtype=np.int64),
                       env.single_observation_space, env.single_action_space,
                       dict(env.benchmark), maps, env.score_fn)


class Policy(Protocol):
    """What a collector asks for actions."""

    def act(self, obs: np.ndarray, task_id: np.ndarray) -> np.ndarray: ...


@dataclass
class Step:
    """One vector step: row ``i`` is env ``i``'s transition (policy-space actions)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray  # the true next observation, also when an episode just ended
    terminated: np.ndarray  # true terminals only
    truncated: np.ndarray  # time limits (bootstrap through them)
    task_id: np.ndarray
    next_policy_obs: np.ndarray | None = None
    """What the policy sees next: ``next_obs``, except where an episode ended and the env was
    reset (the new episode's first observation)."""
    episode: dict[str, np.ndarray] | None = None  # return/length/success of finished episodes
    episode_mask: np.ndarray | None = None  # which envs finished an episode on this step


@dataclass
class Episodes:
    """Episodes that ended during one ``collect``: one entry per episode, in the order they
    ended. ``step`` is the index (0-based) of the vector step of the chunk that ended it."""

    step: np.ndarray
    env: np.ndarray
    task_id: np.ndarray
    ret: np.ndarray
    length: np.ndarray
    success: np.ndarray

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @staticmethod
    def from_steps(steps: list[Step]) -> Episodes:
        rows: list[tuple[int, int, int, float, int, bool]] = []
        for t, s in enumerate(steps):
            if s.episode is None or s.episode_mask is None:
                continue
            for i in np.flatnonzero(s.episode_mask):
                rows.append((t, int(i), int(s.task_id[i]), float(s.episode["return"][i]),
                             int(s.episode["length"][i]), bool(s.episode["success"][i])))
        cols = list(zip(*rows, strict=True)) if rows else [()] * 6
        return Episodes(
            step=np.array(cols[0], dtype=np.int64),
            env=np.array(cols[1], dtype=np.int64),
            task_id=np.array(cols[2], dtype=np.int64),
            ret=np.array(cols[3], dtype=np.float64),
            length=np.array(cols[4], dtype=np.int64),
            success=np.array(cols[5], dtype=bool),
        )


@dataclass
class Transitions:
    """``n`` vector steps of ``N`` envs: arrays ``[n, N, ...]`` (``task_id`` is ``[N]``), the
    episodes that ended during them, and the version of the policy that acted."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    task_id: np.ndarray
    episodes: Episodes
    policy_version: int = 0
    last_obs: np.ndarray | None = None
    """``[N, ...]``: what the policy sees after the chunk (the last step's
    ``next_policy_obs``): the observation an on-policy learner bootstraps from."""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-step arrays ``[n, N, ...]`` a remote actor computed while acting, for learners that
    cannot watch the steps being taken: ``log_prob`` (``log μ(a|s)`` of the acting policy),
    ``sample`` (the action as the policy sampled it, before any clipping to the env's bounds)
    and ``truncation_value`` (``V`` of an episode's real last observation where a time limit
    cut it, else 0); see :mod:`mtrl.collect.ray`."""

    @property
    def num_steps(self) -> int:
        return int(self.reward.shape[0])

    @staticmethod
    def from_steps(steps: list[Step], policy_version: int = 0) -> Transitions:
        if not steps:
            raise ValueError("no steps to collect")
        return Transitions(
            obs=np.stack([s.obs for s in steps]),
            action=np.stack([s.action for s in steps]),
            reward=np.stack([s.reward for s in steps]),
            next_obs=np.stack([s.next_obs for s in steps]),
            terminated=np.stack([s.terminated for s in steps]),
            truncated=np.stack([s.truncated for s in steps]),
            task_id=steps[0].task_id,
            episodes=Episodes.from_steps(steps),
            policy_version=policy_version,
            last_obs=steps[-1].next_policy_obs,
        )

    _ARRAYS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "task_id")
    _EPISODES = ("step", "env", "task_id", "ret", "length", "success")

    def to_state(self) -> dict[str, Any]:
        """The chunk as tensors and ints (what ``torch.load(weights_only=True)`` reads back):
        a collector's checkpoint keeps a chunk that was collected but not yet handed over."""
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a).copy())

        state: dict[str, Any] = {k: t(getattr(self, k)) for k in self._ARRAYS}
        state["episodes"] = {k: t(getattr(self.episodes, k)) for k in self._EPISODES}
        state["policy_version"] = int(self.policy_version)
        if self.last_obs is not None:
            state["last_obs"] = t(self.last_obs)
        state["extras"] = {k: t(v) for k, v in self.extras.items()}
        return state

    @staticmethod
    def from_state(state: dict[str, Any]) -> Transitions:
        """The inverse of :meth:`to_state`."""
        arrays = {k: state[k].numpy() for k in Transitions._ARRAYS}
        episodes = Episodes(**{k: state["episodes"][k].numpy() for k in Transitions._EPISODES})
        return Transitions(**arrays, episodes=episodes,
                           policy_version=int(state["policy_version"]),
                           last_obs=state["last_obs"].numpy() if "last_obs" in state else None,
                           extras={k: v.numpy() for k, v in state["extras"].items()})

    def step(self, t: int) -> Step:
        """Vector step ``t`` of the chunk (without episode statistics)."""
        return Step(self.obs[t], self.action[t], self.reward[t], self.next_obs[t],
                    self.terminated[t], self.truncated[t], self.task_id)


class Collector(Protocol):
    """What the training loop needs from a collector."""

    @property
    def spec(self) -> EnvSpec:
        """The envs it steps: tasks, spaces, benchmark facts."""
        ...

    @property
    def task_ids(self) -> np.ndarray: ...

    @property
    def num_envs(self) -> int: ...

    @property
    def started(self) -> bool:
        """Whether the envs have been reset (or restored) and stand at an observation."""
        ...

    def reset(self, seed: int | None = None) -> Any: ...

    def collect(self, policy: Any, n: int) -> Transitions: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
