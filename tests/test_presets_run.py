"""Every preset trains, checkpoints, resumes and evaluates (a few vector steps each, with its
own networks, env and agent; slow: MT50 and Atari-57 build hundreds of envs)."""

from __future__ import annotations

import pytest

from mtrl import config as C
from mtrl.presets import PRESETS, get_preset
from mtrl.runner import train

# toy-distill needs teacher files: tests/test_distill_run.py trains it end to end.
NAMES = [n for n in PRESETS if n != "toy-distill"]


def _shrink(cfg, steps_per_env: int):
    """The preset as it is, run for a few rollouts/vector steps with tiny buffers."""
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    num_envs = len(C.task_names(cfg.env)) * cfg.env.envs_per_task
    if cfg.agent.name in ("mtsac", "distral-sac"):
        cfg.warmup_steps = num_envs
        cfg.replay.capacity = max(cfg.replay.capacity // 1000, 64 * 50)
    rollout = {"mta2c": cfg.agent.a2c.n_steps, "distral-a2c": cfg.agent.a2c.n_steps,
               "mtppo": cfg.agent.ppo.n_steps,
               "mtimpala": cfg.agent.impala.n_steps}.get(cfg.agent.name, 2)
    cfg.total_steps = num_envs * rollout * steps_per_env
    cfg.eval.every = 0
    cfg.eval.final = True
    cfg.eval.episodes_per_task = 1
    cfg.checkpoint.every = 0
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_preset_trains_resumes_and_evaluates(name, tmp_path):
    cfg = _shrink(get_preset(name), 1)
    if name.startswith(("mt50", "mt25", "atari57")):
        cfg.eval.final = False  # building their evaluation envs too doubles minutes of setup
    first = train(cfg, tmp_path / "r")
    assert first.env_steps >= cfg.total_steps and first.last_checkpoint is not None
    again = _shrink(get_preset(name), 1)
    again.total_steps = first.env_steps + cfg.total_steps  # on-policy runs end on a rollout
    again.eval.final = cfg.eval.final
    resumed = train(again, tmp_path / "r", resume=True)
    assert resumed.env_steps >= again.total_steps > first.env_steps
    if cfg.eval.final:
        assert resumed.final_eval is not None
