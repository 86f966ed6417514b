"""Every environment becomes a :class:`MultiTaskVectorEnv`; :func:`make_env` builds one from
an :class:`~mtrl.config.EnvConfig`."""

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
    env = _make(cfg, seed=seed, evaluation=evaluation, render=render)
    if cfg.reward_scales:
        env.set_reward_scales(cfg.reward_scales)
    return env


def _make(cfg: EnvConfig, *, seed: int, evaluation: bool, render: bool) -> MultiTaskVectorEnv:
    if cfg.name in ("toy-reach", "toy-reach-discrete"):
        from mtrl.envs.toy import make_toy_env

        env = make_toy_env(
            cfg.num_tasks,
            envs_per_task=1 if evaluation else cfg.envs_per_task,
            discrete=cfg.name == "toy-reach-discrete",
            max_episode_steps=cfg.max_episode_steps,
            seed=seed,
            evaluation=evaluation,
        )
        if evaluation:
            env.set_terminate_on_success(True)
        return env
    if cfg.name == "atari":
        from mtrl.envs.atari import make_atari_env

        # Frames are always available (render_frames shows the agent's view): render is moot.
        return make_atari_env(
            cfg.tasks,
            1 if evaluation else cfg.envs_per_task,
            seed=seed,
            evaluation=evaluation,
            clip_rewards=cfg.clip_rewards,
            repeat_action_probability=cfg.sticky_actions,
            noop_max=cfg.noop_max,
            frame_skip=cfg.frame_skip,
            frame_stack=cfg.frame_stack,
            max_episode_frames=cfg.max_episode_frames,
            num_threads=cfg.num_threads,
        )
    from mtrl.envs.metaworld import make_metaworld_env

    return make_metaworld_env(
        cfg.name,
        cfg.tasks,
        seed=seed,
        vector_strategy=cfg.vector_strategy,
        evaluation=evaluation,
        render=render,
    )
