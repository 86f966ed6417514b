"""Tiny multi-task environments that need no simulator: tests, demos, learning checks.

**Point-reach.** A point starts near the origin of the plane. Task ``k`` of ``T`` has its goal
on the unit circle at angle ``2πk/T``. The observation is the point's position only, so the
goal must come from the task id. Each step moves the point by ``step_size · a``.

* reward: ``1 − ‖p − g_k‖`` (about 0 at the start, 1 at the goal);
* success: ``‖p − g_k‖ < success_radius``;
* the other tasks' goals are traps: entering one terminates the episode (a true terminal).

A policy that ignores the task id follows the same path for every task and ends at the first
goal region it enters, so it can solve at most one task (for ``T ≥ 2``): the environment tests
that an agent actually conditions on the task.

``toy-reach`` has continuous actions in ``[-1, 1]²``; ``toy-reach-discrete`` has five actions
(stay, +x, −x, +y, −y).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from mtrl.envs.base import MultiTaskVectorEnv
from mtrl.registry import register_env

_DISCRETE_MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64)


class PointReachVectorEnv(gym.vector.VectorEnv):
    """Vectorized multi-task point-reach (numpy, no simulator). See the module docstring."""

    def __init__(
        self,
        num_tasks: int,
        envs_per_task: int = 1,
        *,
        max_episode_steps: int = 50,
        discrete: bool = False,
        step_size: float = 0.1,
        success_radius: float = 0.1,
        start_noise: float = 0.1,
        seed: int | None = None,
        autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP,
        task_ids: list[int] | np.ndarray | None = None,
    ) -> None:
        """``task_ids``: the task of each sub-env (a slice of the ``num_tasks``-task env, e.g.
        one remote env runner's share; goals stay those of ``num_tasks`` tasks); default
        ``envs_per_task`` sub-envs of every task, in task order."""
        if num_tasks < 1 or envs_per_task < 1:
            raise ValueError("num_tasks and envs_per_task must be >= 1")
        self.num_tasks = num_tasks
        if task_ids is None:
            self.task_ids = np.repeat(np.arange(num_tasks), envs_per_task).astype(np.int64)
        else:
            self.task_ids = np.asarray(task_ids, dtype=np.int64).reshape(-1)
            if self.task_ids.size == 0 or self.task_ids.min() < 0 or \
                    self.task_ids.max() >= num_tasks:
                raise ValueError(f"task_ids must be a non-empty list of tasks in [0, {num_tasks})")
        self.num_envs = int(self.task_ids.shape[0])
        angles = 2 * np.pi * np.arange(num_tasks) / num_tasks
        self.goals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self.max_episode_steps = max_episode_steps
        self.discrete = discrete
        self.step_size = step_size
        self.success_radius = success_radius
        self.start_noise = start_noise
        self.terminate_on_success = False
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode(autoreset_mode)}
        self.autoreset_mode = self.metadata["autoreset_mode"]

        self.single_observation_space = gym.spaces.Box(-1.5, 1.5, shape=(2,), dtype=np.float32)
        if discrete:
            self.single_action_space = gym.spaces.Discrete(len(_DISCRETE_MOVES))
        else:
            self.single_action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

        self._rng = np.random.default_rng(seed)
        self._pos = np.zeros((self.num_envs, 2))
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._needs_reset = np.ones(self.num_envs, dtype=bool)

    # ------------------------------------------------------------------ dynamics
    def _spawn(self, mask: np.ndarray) -> None:
        n = int(mask.sum())
        self._pos[mask] = self._rng.uniform(-self.start_noise, self.start_noise, size=(n, 2))
        self._t[mask] = 0
        self._needs_reset[mask] = False

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed if isinstance(seed, int) else seed[0])
        mask = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
        self._spawn(mask)
        return self._pos.astype(np.float32), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self.autoreset_mode == gym.vector.AutoresetMode.DISABLED and self._needs_reset.any():
            raise RuntimeError(
                "step() on a finished episode: reset the finished envs first (autoreset disabled)"
            )
        if self.discrete:
            move = _DISCRETE_MOVES[np.asarray(actions, dtype=np.int64)]
        else:
            move = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.step_size * move, -1.5, 1.5)
        self._t += 1

        # distance of every env to every goal: [num_envs, num_tasks]
        d_all = np.linalg.norm(self._pos[:, None, :] - self.goals[None], axis=-1)
        own = d_all[np.arange(self.num_envs), self.task_ids]
        success = own < self.success_radius
        in_any = (d_all < self.success_radius).any(axis=1)
        trapped = in_any & ~success
        reward = (1.0 - own).astype(np.float32)
        terminated = trapped | (success & self.terminate_on_success)
        truncated = (self._t >= self.max_episode_steps) & ~terminated

        obs = self._pos.astype(np.float32)
        info: dict[str, Any] = {"success": success, "_success": np.ones(self.num_envs, bool)}
        done = terminated | truncated
        if done.any():
            if self.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP:
                final_obs = np.empty(self.num_envs, dtype=object)
                final_obs[:] = None
                for i in np.flatnonzero(done):
                    final_obs[i] = obs[i].copy()
                info = {
                    "success": np.where(done, False, success),
                    "_success": ~done,
                    "final_obs": final_obs,
                    "_final_obs": done,
                    "final_info": {"success": success.copy(), "_success": done.copy()},
                    "_final_info": done,
                }
                self._spawn(done)
                obs = self._pos.astype(np.float32)
            else:
                self._needs_reset |= done
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        return {
            "pos": self._pos.tolist(),
            "t": self._t.tolist(),
            "needs_reset": self._needs_reset.tolist(),
            "rng": self._rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._pos = np.asarray(state["pos"], dtype=np.float64).reshape(self.num_envs, 2)
        self._t = np.asarray(state["t"], dtype=np.int64)
        self._needs_reset = np.asarray(state["needs_reset"], dtype=bool)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self._rng = rng


class ToyMultiTaskEnv(MultiTaskVectorEnv):
    """MultiTaskVectorEnv over :class:`PointReachVectorEnv`."""

    env: PointReachVectorEnv

    def set_goals(self, goal_index: np.ndarray, mask: np.ndarray) -> None:
        # One fixed goal per task: nothing to select.
        if np.any(np.asarray(goal_index)[mask] != 0):
            raise ValueError("toy envs have a single goal per task (goal index 0)")

    def set_terminate_on_success(self, flag: bool) -> None:
        self.env.terminate_on_success = bool(flag)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "backend": self.env.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.env.set_state(state["backend"])

    @property
    def restores_exactly(self) -> bool:
        return True

    def render_frames(self, size: int = 160) -> list[np.ndarray]:
        """A top view per sub-env: other tasks' goals (traps) grey, the env's own goal green,
        the point red; drawn with numpy, no display needed."""
        inner = self.env
        coords = np.linspace(-1.5, 1.5, size)
        xx, yy = np.meshgrid(coords, coords[::-1])
        frames = []
        for i in range(inner.num_envs):
            img = np.full((size, size, 3), 255, dtype=np.uint8)
            for k, g in enumerate(inner.goals):
                disk = (xx - g[0]) ** 2 + (yy - g[1]) ** 2 < inner.success_radius**2
                img[disk] = (40, 170, 60) if k == inner.task_ids[i] else (170, 170, 170)
            p = inner._pos[i]
            img[(xx - p[0]) ** 2 + (yy - p[1]) ** 2 < 0.05**2] = (220, 30, 30)
            frames.append(img)
        return frames


def make_toy_env(
    num_tasks: int,
    *,
    envs_per_task: int = 1,
    discrete: bool = False,
    max_episode_steps: int = 50,
    seed: int | None = None,
    evaluation: bool = False,
    task_ids: list[int] | np.ndarray | None = None,
) -> ToyMultiTaskEnv:
    """The ``num_tasks``-task point-reach; ``task_ids``: only sub-envs of these tasks (one per
    entry; task ids and names stay the full env's), see :class:`PointReachVectorEnv`."""
    mode = gym.vector.AutoresetMode.DISABLED if evaluation else gym.vector.AutoresetMode.SAME_STEP
    inner = PointReachVectorEnv(
        num_tasks,
        envs_per_task,
        max_episode_steps=max_episode_steps,
        discrete=discrete,
        seed=seed,
        autoreset_mode=mode,
        task_ids=task_ids,
    )
    name = "toy-reach-discrete" if discrete else "toy-reach"
    return ToyMultiTaskEnv(
        inner,
        [f"goal-{k}" for k in range(num_tasks)],
        inner.task_ids,
        max_episode_steps=max_episode_steps,
        goals_per_task=1,
        benchmark={
            "name": name,
            "episode_length": max_episode_steps,
            "reward": "1 - distance to goal; other goals are terminal traps",
            "success": f"distance < {inner.success_radius} at any step",
        },
    )


class PointReachTaskEnv(gym.Env):  # type: ignore[type-arg]
    """Task ``task`` of the ``num_tasks``-task point-reach as a single gymnasium env, for
    single-task learners (stable-baselines3 teachers for policy distillation).

    The dynamics are :class:`PointReachVectorEnv`'s, not a copy: the env holds a
    ``PointReachVectorEnv(num_tasks, 1)`` without autoreset and exposes only sub-env ``task``
    (the other sub-envs take the "stay" action and never end an episode). Spaces, reward, traps,
    success (``info["success"]``) and the time limit (truncation, not termination) are those of
    the multi-task env; with the same seed, the first episode after ``reset(seed=s)`` is
    exactly sub-env ``task`` of ``PointReachVectorEnv(num_tasks, 1, seed=s)``.
    """

    def __init__(
        self,
        num_tasks: int,
        task: int,
        *,
        max_episode_steps: int = 50,
        discrete: bool = False,
        step_size: float = 0.1,
        success_radius: float = 0.1,
        start_noise: float = 0.1,
        seed: int | None = None,
    ) -> None:
        if not 0 <= task < num_tasks:
            raise ValueError(f"task={task} must be in [0, {num_tasks})")
        self.task = task
        self.num_tasks = num_tasks
        self.inner = PointReachVectorEnv(
            num_tasks, 1, max_episode_steps=max_episode_steps, discrete=discrete,
            step_size=step_size, success_radius=success_radius, start_noise=start_noise,
            seed=seed, autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        )
        self.observation_space = self.inner.single_observation_space
        self.action_space = self.inner.single_action_space
        self.discrete = discrete
        self.goal = self.inner.goals[task].copy()
        # actions of the hidden sub-envs: "stay" (index 0, or the zero vector)
        self._actions = (np.zeros(num_tasks, dtype=np.int64) if discrete
                         else np.zeros((num_tasks, 2), dtype=np.float32))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, _ = self.inner.reset(seed=seed)
        return obs[self.task].copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._actions[self.task] = action
        obs, reward, terminated, truncated, info = self.inner.step(self._actions)
        k = self.task
        done = bool(terminated[k] or truncated[k])
        if done:
            # all sub-envs share the step counter: they finish together; restart them on the
            # next reset()
            self.inner._needs_reset[:] = True
        return (obs[k].copy(), float(reward[k]), bool(terminated[k]), bool(truncated[k]),
                {"success": bool(info["success"][k])})


# ----------------------------------------------------------------------------------------------
# Registration: env.name = toy-reach | toy-reach-discrete


def _toy_task_names(cfg: Any) -> list[str]:
    return [f"goal-{k}" for k in range(cfg.num_tasks)]


def _check_toy(cfg: Any) -> None:
    from mtrl.errors import ConfigError

    if cfg.num_tasks < 1:
        raise ConfigError(f"env.num_tasks={cfg.num_tasks} must be >= 1")
    if cfg.max_episode_steps <= 0:
        raise ConfigError(f"env.max_episode_steps={cfg.max_episode_steps!r} must be > 0")


def _toy_builder(discrete: bool) -> Any:
    def build(cfg: Any, *, seed: int, evaluation: bool = False, render: bool = False,
              tasks: list[int] | None = None) -> ToyMultiTaskEnv:
        env = make_toy_env(cfg.num_tasks, envs_per_task=1 if evaluation else cfg.envs_per_task,
                           discrete=discrete, max_episode_steps=cfg.max_episode_steps,
                           seed=seed, evaluation=evaluation, task_ids=tasks)
        if evaluation:
            env.set_terminate_on_success(True)
        return env

    return build


for _name, _discrete in (("toy-reach", False), ("toy-reach-discrete", True)):
    register_env(_name, _toy_builder(_discrete), task_names=_toy_task_names, check=_check_toy,
                 discrete=_discrete, uses=("num_tasks", "max_episode_steps"), task_subsets=True)
