"""MT10 collection through mtrl relative to raw Meta-World vector-env stepping.

What is compared (env-steps/s, 10 env-steps per vector step):

* mtrl: ``make_metaworld_env("mt10", seed=0)`` (a ``MultiTaskVectorEnv``: float32 casts, success
  and episode bookkeeping, ``info["final_obs"]`` across autoresets) stepped with uniform random
  actions in [-1, 1], every step stored with ``MultiTaskReplayBuffer.add(obs, action, reward,
  info["final_obs"], terminated, env.task_ids)``.
* raw: ``gym.make_vec("Meta-World/MT10", vector_strategy="sync", seed=0)`` stepped with the same
  random actions and nothing else.

Why it is fair: Meta-World's defaults for the raw env are the settings mtrl uses (reward v2,
500-step episodes, same-step autoreset, no one-hot), both envs are built with the same seed
(same goals) and get the same action sequence, so both simulators pass through the same states
and do the same physics work. Both are built once, warmed up, then timed chunks of vector steps
alternate between them (the order flips every round, so slow drift of the machine hits both
alike). ``mt10_collect_vs_raw`` is the median over rounds of the paired ratio of steps/s
(mtrl/raw); the ratio of the two median rates is reported too. Close to 1 means mtrl's wrapper
and replay insertion add little on top of the simulator.

    python benchmarks/env_speed.py --json runs/bench/env_speed.json [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from mtrl.data.replay import MultiTaskReplayBuffer
from mtrl.envs.metaworld import make_metaworld_env

OBS_DIM = 39
ACTION_DIM = 4
NUM_TASKS = 10


class MtrlCollector:
    """mtrl's collection loop: step the MultiTaskVectorEnv and store every transition."""

    def __init__(self, capacity: int) -> None:
        self.env = make_metaworld_env("mt10", seed=0)
        self.buffer = MultiTaskReplayBuffer(NUM_TASKS, capacity, (OBS_DIM,), ACTION_DIM, seed=0)
        self.obs, _ = self.env.reset(seed=0)

    def run(self, actions: np.ndarray) -> float:
        """Step through ``actions`` [steps, num_envs, action_dim]; return env-steps/s."""
        env, buffer, obs = self.env, self.buffer, self.obs
        t0 = time.perf_counter()
        for action in actions:
            next_obs, reward, terminated, _, info = env.step(action)
            buffer.add(obs, action, reward, info["final_obs"], terminated, env.task_ids)
            obs = next_obs
        elapsed = time.perf_counter() - t0
        self.obs = obs
        return actions.shape[0] * actions.shape[1] / elapsed


class RawStepper:
    """Meta-World's own MT10 vector env, stepped and nothing else."""

    def __init__(self) -> None:
        self.env = gym.make_vec("Meta-World/MT10", vector_strategy="sync", seed=0)
        self.env.reset(seed=0)

    def run(self, actions: np.ndarray) -> float:
        env = self.env
        t0 = time.perf_counter()
        for action in actions:
            env.step(action)
        elapsed = time.perf_counter() - t0
        return actions.shape[0] * actions.shape[1] / elapsed


def run(rounds: int, steps: int, warmup: int, capacity: int) -> dict[str, Any]:
    import metaworld  # noqa: F401  (registers the Meta-World/* ids)

    t0 = time.perf_counter()
    ours = MtrlCollector(capacity)
    raw = RawStepper()
    build_s = time.perf_counter() - t0
    num_envs = ours.env.num_envs
    if num_envs != raw.env.num_envs:
        raise RuntimeError(f"mtrl has {num_envs} envs, raw {raw.env.num_envs}")

    rng = np.random.default_rng(0)

    def actions(n: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, (n, num_envs, ACTION_DIM)).astype(np.float32)

    warm = actions(warmup)
    ours.run(warm)
    raw.run(warm)

    sps_mtrl: list[float] = []
    sps_raw: list[float] = []
    for r in range(rounds):
        chunk = actions(steps)  # the same actions for both sides
        if r % 2 == 0:
            sps_mtrl.append(ours.run(chunk))
            sps_raw.append(raw.run(chunk))
        else:
            sps_raw.append(raw.run(chunk))
            sps_mtrl.append(ours.run(chunk))
    ours.env.close()
    raw.env.close()

    med_mtrl = statistics.median(sps_mtrl)
    med_raw = statistics.median(sps_raw)
    paired = statistics.median(a / b for a, b in zip(sps_mtrl, sps_raw, strict=True))
    return {
        "mt10_collect_vs_raw": paired,
        "ratio_of_medians": med_mtrl / med_raw,
        "mtrl_env_steps_per_s": med_mtrl,
        "raw_env_steps_per_s": med_raw,
        "rounds": rounds,
        "vector_steps_per_round": steps,
        "warmup_vector_steps": warmup,
        "num_envs": num_envs,
        "buffer_capacity": capacity,
        "build_s": build_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--steps", type=int, default=1000, help="vector steps per timed chunk")
    parser.add_argument("--rounds", type=int, default=6, help="timed chunks of each side")
    parser.add_argument("--warmup", type=int, default=50, help="untimed vector steps of each")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="replay capacity")
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1 or args.warmup < 1:
        parser.error("--steps, --rounds and --warmup must be positive")
    warnings.filterwarnings("ignore")

    result = run(args.rounds, args.steps, args.warmup, args.capacity)
    print(
        f"mt10_collect_vs_raw = {result['mt10_collect_vs_raw']:.3f} "
        f"(mtrl {result['mtrl_env_steps_per_s']:.0f} env-steps/s, "
        f"raw {result['raw_env_steps_per_s']:.0f} env-steps/s, medians; "
        f"ratio of medians {result['ratio_of_medians']:.3f})"
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
