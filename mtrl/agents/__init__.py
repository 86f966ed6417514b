"""Agents: losses, optimizers, target networks, and their data paths.

:func:`build_agent` turns an agent config into an agent (all that evaluation needs);
:func:`build_data_path` adds what training needs: its storage, its behaviour policy and its
update schedule (:mod:`mtrl.agents.offpolicy`, :mod:`mtrl.agents.onpolicy`)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mtrl import config as C
from mtrl.agents.a2c import MTA2C, A2CHyperparams, build_mta2c
from mtrl.agents.base import DataPath, EnvSpec, Reference
from mtrl.agents.distill import (
    DistillBehaviour,
    Distiller,
    DistillHyperparams,
    TeacherActor,
    build_distiller,
)
from mtrl.agents.distral import DistralHyperparams, Pi0Actor
from mtrl.agents.offpolicy import ReplayDataPath, UniformWarmup, store_states, store_transitions
from mtrl.agents.onpolicy import RolloutDataPath
from mtrl.agents.sac import MTSAC, SACHyperparams, build_mtsac
from mtrl.config import AgentConfig, ConfigError, TrainConfig
from mtrl.optim.combiners import make_combiner

__all__ = [
    "MTA2C",
    "MTSAC",
    "A2CHyperparams",
    "DataPath",
    "DistillHyperparams",
    "Distiller",
    "DistralHyperparams",
    "EnvSpec",
    "Pi0Actor",
    "SACHyperparams",
    "build_agent",
    "build_data_path",
    "build_mta2c",
    "build_mtsac",
]

Agent = MTSAC | MTA2C | Distiller


def build_agent(
    cfg: AgentConfig,
    *,
    num_tasks: int,
    device: torch.device,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    obs_space: gym.Space[Any] | None = None,
    action_space: gym.Space[Any] | None = None,
) -> Agent:
    """The agent a config describes, with freshly initialized networks on ``device``, for an
    env with the given single-env spaces (or, for mtsac, flat ``obs_dim`` / ``action_dim``)."""
    if obs_space is not None:
        obs_dim = int(np.prod(obs_space.shape or ()))
    if action_space is not None and isinstance(action_space, gym.spaces.Box):
        action_dim = int(np.prod(action_space.shape))
    if cfg.name == "distill":
        if obs_space is None or action_space is None:
            raise ValueError("distill needs obs_space and action_space")
        return _build_distiller(cfg, obs_space, action_space, num_tasks, device)
    if cfg.name in ("mta2c", "distral-a2c"):
        if obs_space is None or action_space is None:
            raise ValueError(f"{cfg.name} needs obs_space and action_space")
        return _build_a2c(cfg, obs_space, action_space, num_tasks, device)
    if cfg.name not in ("mtsac", "distral-sac"):
        raise ValueError(f"unknown agent {cfg.name!r}")
    if action_space is not None and not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"{cfg.name} needs continuous (Box) actions, the env has {action_space}")
    if obs_dim is None or action_dim is None:
        raise ValueError(f"{cfg.name} needs obs_dim/action_dim or the env's spaces")
    target_entropy = -float(action_dim) if cfg.target_entropy is None else cfg.target_entropy
    return build_mtsac(
        obs_dim=obs_dim,
        action_dim=action_dim,
        num_tasks=num_tasks,
        actor_hidden=list(cfg.actor_hidden),
        critic_hidden=list(cfg.critic_hidden),
        actor_lr=cfg.actor_lr,
        critic_lr=cfg.critic_lr,
        alpha_lr=cfg.alpha_lr,
        init_alpha=cfg.init_alpha,
        hparams=SACHyperparams(
            gamma=cfg.gamma,
            tau=cfg.tau,
            target_entropy=target_entropy,
            grad_clip=cfg.grad_clip,
            max_q_value=cfg.max_q_value,
            popart_actor_scale=cfg.popart_actor_scale,
        ),
        actor_combiner=make_combiner(cfg.actor_combiner, cfg.combiner),
        critic_combiner=make_combiner(cfg.critic_combiner, cfg.combiner),
        log_std_min=cfg.log_std_min,
        log_std_max=cfg.log_std_max,
        popart=bool(cfg.popart),
        popart_beta=cfg.popart_beta,
        actor_arch=cfg.actor_arch,
        critic_arch=cfg.critic_arch,
        arch_cfg=cfg.arch,
        distral=_distral(cfg),
        pi0_hidden=cfg.distral_pi0_hidden,
        pi0_task_input=cfg.distral_pi0_task_input,
        tune_entropy=cfg.distral_tune_entropy,
        device=device,
    )


def _distral(cfg: AgentConfig) -> DistralHyperparams | None:
    if not cfg.name.startswith("distral"):
        return None
    return DistralHyperparams(alpha=cfg.distral_alpha, beta=cfg.distral_beta,
                              columns=cfg.distral_columns)


def _action_spec(action_space: gym.Space[Any], agent: str) -> tuple[int | None, int | None]:
    """``(num_actions, None)`` for Discrete, ``(None, action_dim)`` for Box actions."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n), None
    if isinstance(action_space, gym.spaces.Box):
        return None, int(np.prod(action_space.shape))
    raise ValueError(f"{agent} supports Discrete and Box actions, not {action_space}")


def _build_a2c(cfg: AgentConfig, obs_space: gym.Space[Any], action_space: gym.Space[Any],
               num_tasks: int, device: torch.device) -> MTA2C:
    num_actions, action_dim = _action_spec(action_space, cfg.name)
    return build_mta2c(
        obs_shape=tuple(obs_space.shape or ()),
        num_tasks=num_tasks,
        num_actions=num_actions,
        action_dim=action_dim,
        actor_hidden=list(cfg.actor_hidden),
        critic_hidden=list(cfg.critic_hidden),
        actor_arch=cfg.actor_arch,
        critic_arch=cfg.critic_arch,
        arch_cfg=cfg.arch,
        torso=cfg.torso,
        popart=True if cfg.popart is None else cfg.popart,
        popart_beta=cfg.popart_beta,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        optim_eps=cfg.optim_eps,
        rmsprop_alpha=cfg.rmsprop_alpha,
        hparams=A2CHyperparams(
            gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, ent_coef=cfg.ent_coef,
            vf_coef=cfg.vf_coef, grad_clip=cfg.grad_clip,
        ),
        combiner=make_combiner(cfg.actor_combiner, cfg.combiner),
        distral=_distral(cfg),
        pi0_hidden=cfg.distral_pi0_hidden,
        pi0_task_input=cfg.distral_pi0_task_input,
        device=device,
    )


def _build_distiller(cfg: AgentConfig, obs_space: gym.Space[Any], action_space: gym.Space[Any],
                     num_tasks: int, device: torch.device) -> Distiller:
    """The student of a distillation run (teachers are attached by the trainer: evaluation
    needs only the student)."""
    num_actions, action_dim = _action_spec(action_space, cfg.name)
    return build_distiller(
        obs_shape=tuple(obs_space.shape or ()),
        num_tasks=num_tasks,
        num_actions=num_actions,
        action_dim=action_dim,
        hidden=list(cfg.actor_hidden),
        arch=cfg.actor_arch,
        arch_cfg=cfg.arch,
        torso=cfg.torso,
        squash=cfg.distill_squash,
        lr=cfg.lr,
        hparams=DistillHyperparams(
            loss=cfg.distill_loss,
            temperature=cfg.distill_temperature,
            feature_coef=cfg.distill_feature_coef,
            grad_clip=cfg.grad_clip,
        ),
        device=device,
    )


# ------------------------------------------------------------------------------------------
# Data paths: what each agent learns from and how


def preflight(cfg: TrainConfig, task_names: list[str]) -> dict[str, str]:
    """Checks of files a training run of ``cfg`` reads, done before any env is built.
    Distillation: every teacher path exists; returns ``{task: teacher path}`` ({} otherwise)."""
    if cfg.agent.name != "distill":
        return {}
    from pathlib import Path

    specs = C.parse_teacher_specs(list(cfg.agent.distill_teachers), task_names)
    for t, p in specs.items():
        if not Path(p).exists():
            hint = ""
            if cfg.preset == "toy-distill":
                hint = ("; train SB3 teachers for it with `python experiments/"
                        "train_sb3_teachers.py --discrete --num-tasks "
                        f"{len(task_names)} --out runs/toy-teachers`")
            raise ConfigError(f"agent.distill_teachers: the teacher of task {t!r}, {p}, does "
                              f"not exist{hint}")
    return specs


def build_data_path(agent: Agent, cfg: TrainConfig, env: EnvSpec, device: torch.device
                    ) -> DataPath:
    """The data path of a training run: storage, behaviour policy and update schedule of
    ``agent`` as ``cfg`` describes them, for envs described by ``env``."""
    from mtrl.data.replay import MultiTaskReplayBuffer
    from mtrl.data.rollout import RolloutStorage
    from mtrl.data.states import StateBuffer
    from mtrl.seeding import derive_seed

    per_task = cfg.agent.batch_size // env.num_tasks
    if isinstance(agent, MTA2C):
        storage = RolloutStorage(
            cfg.agent.n_steps, env.task_ids, env.obs_shape, obs_dtype=env.obs_dtype,
            action_shape=() if env.discrete else (env.action_dim,), discrete=env.discrete,
            device=device,
        )
        return RolloutDataPath(agent, storage, gamma=cfg.agent.gamma,
                               gae_lambda=cfg.agent.gae_lambda)
    rng = np.random.default_rng(derive_seed(cfg.seed, "warmup"))
    common = {"num_envs": env.num_envs, "warmup_steps": cfg.warmup_steps,
              "updates_per_step": cfg.updates_per_step, "per_task": per_task, "rng": rng,
              "save_with_checkpoint": cfg.replay.save_with_checkpoint}
    if isinstance(agent, Distiller):
        specs = _attach_teachers(agent, cfg, env, device)
        states = StateBuffer(env.num_tasks, cfg.replay.capacity, env.obs_shape,
                             obs_dtype=env.obs_dtype, device=device,
                             seed=derive_seed(cfg.seed, "replay"))
        behaviour = DistillBehaviour(agent, rng, cfg.agent.distill_data,
                                     cfg.agent.distill_teacher_prob)
        refs = {"teacher": Reference(TeacherActor(agent), {"teachers": specs})}
        return ReplayDataPath(agent, states, behaviour, store_states(states), references=refs,
                              **common)
    buffer = MultiTaskReplayBuffer(env.num_tasks, cfg.replay.capacity, env.obs_shape,
                                   env.action_dim, device=device,
                                   seed=derive_seed(cfg.seed, "replay"))
    return ReplayDataPath(agent, buffer, UniformWarmup(agent, rng, env.action_dim),
                          store_transitions(buffer), **common)


def _attach_teachers(agent: Distiller, cfg: TrainConfig, env: EnvSpec, device: torch.device
                     ) -> dict[str, str]:
    from mtrl.teachers import load_teacher

    specs = preflight(cfg, env.task_names)
    try:
        agent.set_teachers([
            load_teacher(specs[t], t, obs_space=env.obs_space, action_space=env.action_space,
                         device=device, action_map=env.teacher_action_maps.get(t))
            for t in env.task_names
        ])
    except (ValueError, ImportError) as e:
        raise ConfigError(f"agent.distill_teachers: {e}") from e
    return specs
