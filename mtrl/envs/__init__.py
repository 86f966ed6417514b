"""Every environment becomes a :class:`MultiTaskVectorEnv`; :func:`make_env` builds one from
an :class:`~mtrl.config.EnvConfig` through the env registry (:data:`mtrl.registry.ENVS`: the
toy envs, Meta-World and Atari register themselves in their modules)."""

from __future__ import annotations

from collections.abc import Sequence

from mtrl.config import EnvConfig
from mtrl.envs.base import MultiTaskVectorEnv

__all__ = ["MultiTaskVectorEnv", "make_env"]


def make_env(cfg: EnvConfig, *, seed: int, evaluation: bool = False, render: bool = False,
             tasks: Sequence[int] | None = None) -> MultiTaskVectorEnv:
    """Build the training (``evaluation=False``) or evaluation env of a config.

    Evaluation envs have one env per task, autoreset disabled and end episodes at the first
    success (Atari: at game over or the time limit), so that the evaluator can run a fixed
    number of episodes per task, one per goal.

    ``tasks``: build only a slice of the training env, one sub-env per entry playing that
    (global) task; task names and ids stay the whole env's (envs registered with
    ``task_subsets=True``; a remote env runner's share, :mod:`mtrl.collect.ray`).
    """
    from mtrl.registry import ENVS

    entry = ENVS.get(cfg.name, "env.name")
    if tasks is None:
        env = entry.build(cfg, seed=seed, evaluation=evaluation, render=render)
    elif not entry.get("task_subsets"):
        raise ValueError(f"env.name={cfg.name!r} cannot build a subset of its envs (it was "
                         "registered without task_subsets=True)")
    else:
        env = entry.build(cfg, seed=seed, evaluation=evaluation, render=render,
                          tasks=[int(t) for t in tasks])
    if cfg.reward_scales:
        env.set_reward_scales(cfg.reward_scales)
    return env
