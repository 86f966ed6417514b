"""The contract every mtrl environment satisfies: :class:`MultiTaskVectorEnv`.

A MultiTaskVectorEnv is a gymnasium ``VectorEnv`` plus

* ``task_names``: the benchmark's own task names (``reach-v3``), in task-id order;
* ``task_ids``: an int64 array, the task of each sub-env;
* per-step and per-episode bookkeeping that every backend gets right the same way.

Observations are the env's own (no one-hot appended), as float32, except image observations
whose space is ``uint8`` (Atari frames), which stay ``uint8`` end to end (4× less memory and
host→device traffic; networks scale them). The task id travels separately. ``step`` returns a
fresh ``info`` dict with:

``success``     bool[num_envs], the success flag of the step just taken (for an env that
                ended its episode on this step, the flag of its last step).
``final_obs``   [num_envs, *obs_shape], dtype of ``obs``: the true next observation of every
                env for this step, i.e. ``obs`` except where an episode ended and the env was
                reset, where it holds the episode's last observation. Use it as ``next_obs`` in
                replay.
``episode``     only when an episode ended (mask ``_episode``): ``return``, ``length`` and
                ``success`` (True if the success flag was 1 at *any* step of the episode, the
                Meta-World convention) for every env. ``return`` sums the step rewards
                unless the backend says otherwise (Atari: the unclipped game score).

Time-limit truncation is reported as ``truncated`` and never as ``terminated``: agents
bootstrap through time limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


class MultiTaskVectorEnv(gym.vector.VectorWrapper):
    """A vector env over several tasks; see the module docstring for the contract."""

    # Entries of the backend's step info passed on unchanged in the returned info.
    forward_info_keys: tuple[str, ...] = ()

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        task_names: list[str],
        task_ids: np.ndarray,
        *,
        max_episode_steps: int,
        goals_per_task: int,
        benchmark: dict[str, Any],
    ) -> None:
        super().__init__(env)
        self.task_names = list(task_names)
        self.task_ids = np.asarray(task_ids, dtype=np.int64)
        if self.task_ids.shape != (env.num_envs,):
            raise ValueError(f"task_ids must have shape ({env.num_envs},)")
        self.num_tasks = len(self.task_names)
        self.max_episode_steps = int(max_episode_steps)
        self.goals_per_task = int(goals_per_task)
        # Facts that make numbers comparable: benchmark, versions, reward version, episode length.
        self.benchmark = dict(benchmark)
        self.autoreset_mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if self.autoreset_mode not in (
            gym.vector.AutoresetMode.SAME_STEP,
            gym.vector.AutoresetMode.DISABLED,
        ):
            raise ValueError(f"unsupported autoreset mode {self.autoreset_mode}")
        n = env.num_envs
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._ep_success = np.zeros(n, dtype=bool)
        self._reward_scale: np.ndarray | None = None
        space_dtype = getattr(env.single_observation_space, "dtype", None)
        self._obs_dtype = np.uint8 if space_dtype == np.uint8 else np.float32

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        mask = None
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
        obs, info = self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]
        sel = slice(None) if mask is None else mask
        self._ep_return[sel] = 0.0
        self._ep_length[sel] = 0
        self._ep_success[sel] = False
        return np.asarray(obs, dtype=self._obs_dtype), info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, raw = self.env.step(actions)
        obs = np.asarray(obs, dtype=self._obs_dtype)
        reward = np.asarray(reward, dtype=np.float32)
        if self._reward_scale is not None:
            reward = reward * self._reward_scale
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated

        success = _flag(raw, "success", self.num_envs)
        final_obs = obs
        if done.any() and self.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP:
            # The returned obs of a finished env already belongs to its next episode.
            final_obs = obs.copy()
            fin_obs = raw["final_obs"]
            fin_info = raw.get("final_info", {})
            fin_success = _flag(fin_info, "success", self.num_envs)
            for i in np.flatnonzero(done):
                final_obs[i] = np.asarray(fin_obs[i], dtype=self._obs_dtype)
            success = np.where(done, fin_success, success)

        self._ep_return += self._episode_reward(reward, raw)
        self._ep_length += 1
        self._ep_success |= success
        info: dict[str, Any] = {"success": success, "final_obs": final_obs}
        for key in self.forward_info_keys:
            info[key] = raw[key]
        if done.any():
            info["episode"] = {
                "return": self._ep_return.copy(),
                "length": self._ep_length.copy(),
                "success": self._ep_success.copy(),
            }
            info["_episode"] = done
            if self.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP:
                self._ep_return[done] = 0.0
                self._ep_length[done] = 0
                self._ep_success[done] = False
        return obs, reward, terminated, truncated, info

    def set_reward_scales(self, scales: list[float] | np.ndarray) -> None:
        """Multiply task ``k``'s rewards (and so its returns) by ``scales[k]`` — e.g. to give
        tasks rewards of very different magnitudes and test scale-invariant learning."""
        s = np.asarray(scales, dtype=np.float32)
        if s.shape != (self.num_tasks,):
            raise ValueError(f"need one reward scale per task ({self.num_tasks}), got {s.shape}")
        self._reward_scale = s[self.task_ids]
        self.benchmark["reward_scales"] = [float(x) for x in s]

    def render_frames(self) -> list[np.ndarray]:
        """One ``uint8 [H, W, 3]`` frame per sub-env of the current state (envs built with
        ``render=True``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot render")

    # ------------------------------------------------------------------ benchmark hooks
    #: The benchmark's normalized score of an episode return, ``score_fn(task, return)``
    #: (Atari: the human-normalized score); None for benchmarks without one. A module-level
    #: function, so that specs carrying it can be sent to other processes.
    score_fn: Callable[[str, float], float] | None = None

    def normalized_score(self, task: str, episode_return: float) -> float | None:
        """``score_fn(task, episode_return)``, or None when the benchmark has no such score."""
        return None if self.score_fn is None else float(self.score_fn(task, episode_return))

    def native_action_set(self, task: str) -> list[int] | None:
        """The env actions of ``task``'s own (smaller) action set, for policies trained on it
        (an Atari game's minimal set inside the full 18 actions); None if it has none."""
        return None

    # ------------------------------------------------------------------ backend hooks
    def _episode_reward(self, reward: np.ndarray, raw_info: dict[str, Any]) -> np.ndarray:
        """What ``info["episode"]["return"]`` sums: by default the rewards ``step`` returns.
        A backend that transforms its step rewards (Atari's sign clipping) returns the
        untransformed ones so that episode returns stay comparable scores."""
        return reward

    def set_goals(self, goal_index: np.ndarray, mask: np.ndarray) -> None:
        """Fix the goal (0..goals_per_task-1) that masked envs use from their next reset on.
        Used by evaluation to run one episode per goal."""
        raise NotImplementedError

    def set_terminate_on_success(self, flag: bool) -> None:
        """End episodes (as termination) at the first success: the evaluation protocol."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Episode bookkeeping plus whatever of the backend's state can be restored safely."""
        return {
            "ep_return": self._ep_return.tolist(),
            "ep_length": self._ep_length.tolist(),
            "ep_success": self._ep_success.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ep_return[:] = state["ep_return"]
        self._ep_length[:] = state["ep_length"]
        self._ep_success[:] = state["ep_success"]

    @property
    def restores_exactly(self) -> bool:
        """Whether ``load_state_dict`` restores episodes in progress (else they restart)."""
        return False


def _flag(info: dict[str, Any], key: str, n: int) -> np.ndarray:
    """A boolean per-env flag from a vector info dict, False where absent."""
    if key not in info:
        return np.zeros(n, dtype=bool)
    vals = np.asarray(info[key])
    present = np.asarray(info.get("_" + key, np.ones(n, dtype=bool)), dtype=bool)
    return (vals.astype(np.float64) >= 1.0) & present
