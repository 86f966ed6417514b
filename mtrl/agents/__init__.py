"""Agents: losses, optimizers, target networks, and their data paths.

Agents register by name (:data:`mtrl.registry.AGENTS`; the built-in ones in
:mod:`mtrl.agents.specs`). :func:`build_agent` turns an agent config into an agent (all that
evaluation needs); :func:`build_data_path` adds what training needs: its storage, its behaviour
policy and its update schedule (:mod:`mtrl.agents.offpolicy`, :mod:`mtrl.agents.onpolicy`)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mtrl.agents import impala as _impala  # noqa: F401  (registers mtimpala)
from mtrl.agents import specs as _specs  # noqa: F401  (registers the built-in agents)
from mtrl.agents.a2c import MTA2C, A2CHyperparams, build_mta2c
from mtrl.agents.base import DataPath, EnvSpec
from mtrl.agents.distill import Distiller, DistillHyperparams
from mtrl.agents.distral import DistralHyperparams, Pi0Actor
from mtrl.agents.impala import MTIMPALA, IMPALAHyperparams, build_mtimpala, vtrace
from mtrl.agents.sac import MTSAC, SACHyperparams, build_mtsac
from mtrl.config import AgentConfig, TrainConfig
from mtrl.registry import AGENTS

__all__ = [
    "MTA2C",
    "MTIMPALA",
    "MTSAC",
    "A2CHyperparams",
    "DataPath",
    "DistillHyperparams",
    "Distiller",
    "DistralHyperparams",
    "EnvSpec",
    "IMPALAHyperparams",
    "Pi0Actor",
    "SACHyperparams",
    "build_agent",
    "build_data_path",
    "build_mta2c",
    "build_mtimpala",
    "build_mtsac",
    "preflight",
    "vtrace",
]


def build_agent(
    cfg: AgentConfig,
    *,
    num_tasks: int,
    device: torch.device,
    obs_space: gym.Space[Any] | None = None,
    action_space: gym.Space[Any] | None = None,
    obs_dim: int | None = None,
    action_dim: int | None = None,
) -> Any:
    """The agent a config describes, with freshly initialized networks on ``device``, for an
    env with the given single-env spaces (or flat vectors of ``obs_dim`` and continuous actions
    of ``action_dim`` in [-1, 1])."""
    if obs_space is None:
        if obs_dim is None:
            raise ValueError("build_agent needs obs_space or obs_dim")
        obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    if action_space is None:
        if action_dim is None:
            raise ValueError("build_agent needs action_space or action_dim")
        action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    return AGENTS.get(cfg.name, "agent.name").build(
        cfg, obs_space=obs_space, action_space=action_space, num_tasks=num_tasks,
        device=torch.device(device))


def build_data_path(agent: Any, cfg: TrainConfig, env: EnvSpec, device: torch.device
                    ) -> DataPath:
    """The data path of a training run: storage, behaviour policy and update schedule of
    ``agent`` as ``cfg`` describes them, for envs described by ``env``."""
    return AGENTS.get(cfg.agent.name, "agent.name")["data_path"](agent, cfg, env, device)


def preflight(cfg: TrainConfig, task_names: list[str]) -> dict[str, str]:
    """Checks of the files a training run of ``cfg`` reads, before any env is built
    (distillation: every teacher exists; returns ``{task: teacher path}``, else {})."""
    check = AGENTS.get(cfg.agent.name, "agent.name").get("preflight")
    return {} if check is None else dict(check(cfg, task_names))
