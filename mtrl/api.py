"""The library from Python: load a trained policy and act with it.

``mtrl.load(path)`` takes a run directory (latest checkpoint) or a checkpoint file inside one and
returns a :class:`Policy`, whose :meth:`Policy.predict` maps observations and tasks (ids or
names) to env actions. A policy is an actor for :func:`mtrl.evaluate`.

The observation and action spaces come from the run's ``metadata.json`` (written by every run
since they were added there); older runs build their evaluation env once to read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from mtrl.config import TrainConfig
from mtrl.rundir import ResumeError, RunDir

_MAX_SPACE_ELEMENTS = 1 << 24


def space_to_json(space: gym.Space[Any]) -> dict[str, Any]:
    """A Box or Discrete space as plain JSON (uniform bounds stored once)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        def bound(a: np.ndarray) -> Any:
            flat = a.reshape(-1)
            if flat.size and (flat == flat[0]).all():
                return float(flat[0])
            return [float(x) for x in flat]

        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": bound(space.low), "high": bound(space.high)}
    raise TypeError(f"cannot describe a {type(space).__name__} space")


def space_from_json(d: Any, where: str) -> gym.Space[Any]:
    """The space :func:`space_to_json` wrote; ResumeError naming ``where`` if malformed."""
    try:
        if d["type"] == "Discrete":
            return gym.spaces.Discrete(int(d["n"]), start=int(d.get("start", 0)))
        if d["type"] == "Box":
            shape = tuple(int(x) for x in d["shape"])
            if any(x < 0 for x in shape) or int(np.prod(shape)) > _MAX_SPACE_ELEMENTS:
                raise ValueError(f"shape {shape}")
            dtype = np.dtype(d["dtype"])
            if dtype.kind not in "fiu":
                raise ValueError(f"dtype {dtype}")

            def bound(v: Any) -> np.ndarray:
                a = np.asarray(v, dtype=np.float64)
                return np.broadcast_to(a if a.ndim == 0 else a.reshape(shape), shape).astype(
                    dtype)

            return gym.spaces.Box(bound(d["low"]), bound(d["high"]), shape=shape, dtype=dtype)
        raise ValueError(f"type {d['type']!r}")
    except (KeyError, TypeError, ValueError) as e:
        raise ResumeError(f"{where}: invalid space description ({e})") from None


class Policy:
    """A trained multi-task policy: ``predict(obs, task)`` → env actions.

    ``task_names``: the run's tasks, in task-id order. ``config``: the run's resolved config.
    ``checkpoint`` / ``env_steps``: where the weights come from.
    """

    def __init__(self, agent: Any, task_names: Sequence[str], config: TrainConfig,
                 checkpoint: Path, env_steps: int, observation_space: gym.Space[Any],
                 action_space: gym.Space[Any]) -> None:
        self.agent = agent
        self.task_names = list(task_names)
        self.config = config
        self.checkpoint = checkpoint
        self.env_steps = env_steps
        self.observation_space = observation_space
        self.action_space = action_space

    def __repr__(self) -> str:
        return (f"Policy({self.config.agent.name}, {len(self.task_names)} tasks, "
                f"{self.env_steps} env steps, {str(self.checkpoint)!r})")

    def task_id(self, task: int | str | np.integer) -> int:
        if isinstance(task, str):
            if task not in self.task_names:
                raise ValueError(f"unknown task {task!r}; this policy's tasks: "
                                 f"{', '.join(self.task_names)}")
            return self.task_names.index(task)
        k = int(task)
        if not 0 <= k < len(self.task_names):
            raise ValueError(f"task id {k} out of range 0..{len(self.task_names) - 1}")
        return k

    def predict(self, obs: Any, task: Any, deterministic: bool = True) -> np.ndarray:
        """Actions for ``obs`` (one observation, or a batch with a leading dimension) in
        ``task`` (an id or a name, or one per observation). Deterministic: the policy's mode
        (SAC: tanh of the mean; discrete: the most probable action)."""
        obs = np.asarray(obs)
        single = obs.shape == tuple(self.observation_space.shape or ())
        batch = obs[None] if single else obs
        if isinstance(task, str | int | np.integer):
            ids = np.full(batch.shape[0], self.task_id(task), dtype=np.int64)
        else:
            ids = np.asarray([self.task_id(t) for t in task], dtype=np.int64)
            if ids.shape[0] != batch.shape[0]:
                raise ValueError(f"{ids.shape[0]} tasks for {batch.shape[0]} observations")
        actions = self.act(batch, ids, deterministic=deterministic)
        return actions[0] if single else actions

    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = True
            ) -> np.ndarray:
        """The actor interface of :func:`mtrl.evaluate` (batched obs, task-id array)."""
        return self.agent.act(obs, task_id, deterministic=deterministic)


def load(path: str | Path, *, checkpoint: str | Path | None = None,
         device: str = "cpu") -> Policy:
    """The policy of a run directory (its latest checkpoint, or ``checkpoint``), or of a
    checkpoint file ``<run>/checkpoints/ckpt_<step>.pt``."""
    path = Path(path)
    if path.is_file():
        if checkpoint is not None:
            raise ValueError("give a run directory with checkpoint=, or a checkpoint file")
        checkpoint, path = path, path.parent.parent
    run = RunDir(path)
    cfg = run.config()
    meta = run.metadata()
    spaces = meta.get("spaces") if isinstance(meta, dict) else None
    from mtrl import config as C

    task_names = C.task_names(cfg.env)
    if isinstance(spaces, dict):
        obs_space = space_from_json(spaces.get("observation"), str(run.metadata_path))
        act_space = space_from_json(spaces.get("action"), str(run.metadata_path))
    else:  # runs from before the spaces were recorded
        from mtrl.envs import make_env

        env = make_env(cfg.env, seed=cfg.seed, evaluation=True)
        try:
            obs_space, act_space = env.single_observation_space, env.single_action_space
        finally:
            env.close()
    agent, ckpt = run.load_agent(obs_space=obs_space, action_space=act_space,
                                 task_names=task_names, device=device, checkpoint=checkpoint)
    return Policy(agent, task_names, cfg, ckpt.path, ckpt.env_steps, obs_space, act_space)
