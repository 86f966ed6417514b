"""Agents: losses + optimizers + target networks. :func:`build_agent` turns a config into one."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mtrl.agents.a2c import MTA2C, A2CHyperparams, build_mta2c
from mtrl.agents.distill import Distiller, DistillHyperparams, build_distiller
from mtrl.agents.distral import DistralHyperparams, Pi0Actor
from mtrl.agents.sac import MTSAC, SACHyperparams, build_mtsac
from mtrl.config import AgentConfig
from mtrl.optim.combiners import make_combiner

__all__ = [
    "MTA2C",
    "MTSAC",
    "A2CHyperparams",
    "DistillHyperparams",
    "Distiller",
    "DistralHyperparams",
    "Pi0Actor",
    "SACHyperparams",
    "build_agent",
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
