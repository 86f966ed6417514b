from __future__ import annotations

import warnings

import pytest
import torch

from mtrl.config import TrainConfig
from mtrl.presets import get_preset


@pytest.fixture(autouse=True)
def _quiet_and_deterministic():
    warnings.filterwarnings("ignore", module=r"gymnasium\..*")
    torch.set_num_threads(1)
    yield


def tiny_toy_config(**changes) -> TrainConfig:
    """A toy-mtsac config small enough for unit tests (a second or two per run)."""
    cfg = get_preset("toy-mtsac")
    cfg.total_steps = 800
    cfg.warmup_steps = 200
    cfg.agent.actor_hidden = [16, 16]
    cfg.agent.critic_hidden = [16, 16]
    cfg.agent.batch_size = 32
    cfg.replay.capacity = 4_000
    cfg.eval.every = 0
    cfg.eval.final = False
    cfg.eval.episodes_per_task = 2
    cfg.log.every = 200
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 400
    cfg.device = "cpu"
    for key, value in changes.items():
        obj = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, value)
    return cfg
