"""Every environment becomes a :class:`MultiTaskVectorEnv`; :func:`make_env` builds one from
an :class:`~mtrl.config.EnvConfig` through the env registry (:data:`mtrl.registry.ENVS`: the
toy envs, Meta-World and Atari register themselves in their modules)."""

from __future__ import annotations

from mtrl.config import EnvConfig
from mtrl.envs.base import MultiTaskVectorEnv

__all__ = ["MultiTaskVectorEnv", "make_env"]


def make_env(cfg: EnvConfig, *, seed: int, evaluation: bool = False, render: bool = False
             ) -> MultiTaskVectorEnv:
    """Build the training (``evaluation=False``) or evaluation env of a config.

    Evaluation envs have one env per task, autoreset disabled and end episodes at the first
    success (Atari: at game over or the time limit), so that the evaluator can run a fixed
    number of episodes per task, one per goal.
    """
    from mtrl.registry import ENVS

    env = ENVS.get(cfg.name, "env.name").build(cfg, seed=seed, evaluation=evaluation,
                                                render=render)
    if cfg.reward_scales:
        env.set_reward_scales(cfg.reward_scales)
    return env
