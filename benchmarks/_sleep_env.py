"""A plug-in env for benchmarks/overlap_speed.py: the toy point-reach
(:mod:`mtrl.envs.toy`) whose vector step also sleeps ``MTRL_BENCH_STEP_MS`` milliseconds
(read when the env is built; default 5).

Sleeping, not computing, stands in for the simulator's cost so that an env worker does not
compete with the learner for a core: the overlap check then measures the pipeline, not how
many cores the machine has. Loaded as a plug-in (``cfg.plugins``) so that env worker processes
register it too.
"""

from __future__ import annotations

import os
import time
from typing import Any

from mtrl.envs.toy import ToyMultiTaskEnv, make_toy_env
from mtrl.registry import register_env

NAME = "bench-sleep-reach"
STEP_MS_VAR = "MTRL_BENCH_STEP_MS"


def _build(cfg: Any, *, seed: int, evaluation: bool = False, render: bool = False,
           tasks: list[int] | None = None) -> ToyMultiTaskEnv:
    env = make_toy_env(cfg.num_tasks, envs_per_task=1 if evaluation else cfg.envs_per_task,
                       max_episode_steps=cfg.max_episode_steps, seed=seed,
                       evaluation=evaluation, task_ids=tasks)
    cost_s = float(os.environ.get(STEP_MS_VAR, "5")) / 1e3
    step = env.step

    def costly_step(action: Any) -> Any:
        time.sleep(cost_s)
        return step(action)

    env.step = costly_step  # type: ignore[method-assign]
    return env


register_env(NAME, _build, task_names=lambda cfg: [f"goal-{k}" for k in range(cfg.num_tasks)],
             uses=("num_tasks", "max_episode_steps"), task_subsets=True)
