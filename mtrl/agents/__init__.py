"""Agents: losses + optimizers + target networks. :func:`build_agent` turns a config into one."""

from __future__ import annotations

import torch

from mtrl.agents.sac import MTSAC, SACHyperparams, build_mtsac
from mtrl.config import AgentConfig
from mtrl.optim.combiners import make_combiner

__all__ = ["MTSAC", "SACHyperparams", "build_agent", "build_mtsac"]


def build_agent(
    cfg: AgentConfig, *, obs_dim: int, action_dim: int, num_tasks: int, device: torch.device
) -> MTSAC:
    """The agent a config describes, with freshly initialized networks on ``device``."""
    if cfg.name != "mtsac":
        raise ValueError(f"unknown agent {cfg.name!r}")
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
        popart=cfg.popart,
        popart_beta=cfg.popart_beta,
        actor_arch=cfg.actor_arch,
        critic_arch=cfg.critic_arch,
        arch_cfg=cfg.arch,
        device=device,
    )
