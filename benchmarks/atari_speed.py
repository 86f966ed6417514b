"""Atari speed: mtrl's multi-game Atari env relative to raw ale_py vector envs (and more).

Measurements (select with ``--only``; all by default):

``collect`` → ``atari_collect_vs_raw``: frames/s (agent steps × frame skip, summed over envs)
  stepping mtrl's ``make_atari_env(games, envs_per_game)`` — the ``MultiTaskVectorEnv`` over one
  ``AtariVectorEnv`` per game: concatenation, uint8 observations, reward clipping bookkeeping,
  ``info["final_obs"]`` across autoresets, episode returns — with uniform random actions,
  divided by the frames/s of the same games' raw ``ale_py.vector_env.AtariVectorEnv`` s stepped
  the fastest straightforward way (``send`` to every game, then ``recv`` from each) with the
  same random actions and nothing else.

  Why it is fair: both sides use the same games, env count, emulator settings (full action
  space, sticky actions 0.25, frame skip 4 with max-pooling, 84×84 grayscale, 4-frame stack,
  30 no-op starts, same-step autoreset, no ALE reward clipping) and the same number of worker
  threads per game, start from the same per-env seeds and receive the same action sequences,
  so their emulators pass through the same states. Both are built once and warmed up;
  timed chunks then alternate between them, the order flipping every round, so slow drift of
  the machine hits both alike. The ratio is the median over rounds of the paired ratio
  mtrl/raw (the ratio of the median rates is reported too). Goal: ≥ 0.9.

``a2c`` → ``a2c_vs_sb3``: training frames/s of mtrl's A2C (``mtrl.runner.train``, PopArt off)
  ÷ stable-baselines3's ``A2C.learn`` on one game with the same Nature CNN, n_steps, number of
  envs, hyperparameters and the same ale_py vector env (SB3 through a ``VecEnv`` adapter); see
  ``benchmarks/_a2c_vs_sb3.py``. Goal: ≥ 1.0 on a CPU.
``ppo`` → ``ppo_vs_sb3``: the same for mtrl's MT-PPO and SB3's ``PPO.learn`` (n_steps 128, 4
  epochs, minibatches of 256, clip 0.1); see ``benchmarks/_ppo_vs_sb3.py``. Goal: ≥ 1.0.

More measurements plug in as functions ``measure_<name>(args) -> dict`` registered in
``MEASUREMENTS``; ``main`` merges their results into one JSON object.

    python benchmarks/atari_speed.py --json runs/bench/atari_speed.json [--only collect]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.envs.atari import ATARI6, NUM_ACTIONS, make_atari_env, rom_id, threads_per_game

FRAME_SKIP = 4


class RawAtari:
    """One raw ``AtariVectorEnv`` per game with mtrl's settings; send to all, then receive."""

    def __init__(self, games: list[str], envs_per_game: int, seed: int, num_threads: int
                 ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        threads = threads_per_game(num_threads, len(games), envs_per_game)
        self.n = envs_per_game
        self.envs = [
            AtariVectorEnv(
                rom_id(g), envs_per_game, num_threads=threads, autoreset_mode="SameStep",
                full_action_space=True, repeat_action_probability=0.25, frameskip=FRAME_SKIP,
                maxpool=True, stack_num=4, img_height=84, img_width=84, grayscale=True,
                noop_max=30, episodic_life=False, reward_clipping=False, use_fire_reset=False,
                max_num_frames_per_episode=108_000,
            )
            for g in games
        ]
        # The per-env seeds mtrl's env derives from ``seed``: both sides start from the same
        # states and, given the same actions, pass through the same states.
        seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(games) * self.n)
        for k, env in enumerate(self.envs):
            env.reset(seed=seeds[k * self.n:(k + 1) * self.n])

    def run(self, actions: np.ndarray) -> float:
        """Step through ``actions`` [steps, num_envs]; return frames/s."""
        envs, n = self.envs, self.n
        t0 = time.perf_counter()
        for action in actions:
            for k, env in enumerate(envs):
                env.send(action[k * n:(k + 1) * n])
            for env in envs:
                env.recv()
        elapsed = time.perf_counter() - t0
        return actions.size * FRAME_SKIP / elapsed

    def close(self) -> None:
        for env in self.envs:
            env.close()


class MtrlAtari:
    """mtrl's multi-game Atari env, stepped with the given actions."""

    def __init__(self, games: list[str], envs_per_game: int, seed: int, num_threads: int
                 ) -> None:
        self.env = make_atari_env(games, envs_per_game, seed=seed, num_threads=num_threads)
        self.env.reset(seed=seed)

    def run(self, actions: np.ndarray) -> float:
        env = self.env
        t0 = time.perf_counter()
        for action in actions:
            env.step(action)
        elapsed = time.perf_counter() - t0
        return actions.size * FRAME_SKIP / elapsed

    def close(self) -> None:
        self.env.close()


def measure_collect(
    games: list[str] | None = None,
    envs_per_game: int = 4,
    *,
    steps: int = 200,
    rounds: int = 6,
    warmup: int = 20,
    num_threads: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """``atari_collect_vs_raw`` (see the module docstring) and the rates behind it."""
    games = list(games or ATARI6)
    t0 = time.perf_counter()
    ours = MtrlAtari(games, envs_per_game, seed, num_threads)
    raw = RawAtari(games, envs_per_game, seed, num_threads)
    build_s = time.perf_counter() - t0
    num_envs = ours.env.num_envs
    rng = np.random.default_rng(seed)

    def actions(n: int) -> np.ndarray:
        return rng.integers(0, NUM_ACTIONS, size=(n, num_envs), dtype=np.int64)

    warm = actions(warmup)
    ours.run(warm)
    raw.run(warm)
    fps_mtrl: list[float] = []
    fps_raw: list[float] = []
    for r in range(rounds):
        chunk = actions(steps)  # the same actions for both sides
        if r % 2 == 0:
            fps_mtrl.append(ours.run(chunk))
            fps_raw.append(raw.run(chunk))
        else:
            fps_raw.append(raw.run(chunk))
            fps_mtrl.append(ours.run(chunk))
    threads = ours.env.env.threads_per_game
    ours.close()
    raw.close()

    med_mtrl = statistics.median(fps_mtrl)
    med_raw = statistics.median(fps_raw)
    paired = [a / b for a, b in zip(fps_mtrl, fps_raw, strict=True)]
    return {
        "atari_collect_vs_raw": statistics.median(paired),
        "collect_ratio_of_medians": med_mtrl / med_raw,
        "collect_rounds": paired,
        "mtrl_frames_per_s": med_mtrl,
        "raw_frames_per_s": med_raw,
        "collect_setup": {
            "games": games,
            "envs_per_game": envs_per_game,
            "num_envs": num_envs,
            "threads_per_game": threads,
            "vector_steps_per_round": steps,
            "rounds": rounds,
            "warmup_vector_steps": warmup,
            "build_s": build_s,
        },
    }


def _collect(args: argparse.Namespace) -> dict[str, Any]:
    return measure_collect(args.games, args.envs_per_game, steps=args.steps, rounds=args.rounds,
                           warmup=args.warmup, num_threads=args.num_threads)


def _a2c(args: argparse.Namespace) -> dict[str, Any]:
    from _a2c_vs_sb3 import measure_a2c_vs_sb3

    return measure_a2c_vs_sb3(num_envs=args.a2c_envs, steps=args.a2c_steps,
                              rounds=args.a2c_rounds, device=args.device)


def _ppo(args: argparse.Namespace) -> dict[str, Any]:
    from _ppo_vs_sb3 import measure_ppo_vs_sb3

    return measure_ppo_vs_sb3(num_envs=args.a2c_envs, steps=args.ppo_steps,
                              rounds=args.a2c_rounds, device=args.device)


# name → function(args) -> results dict. Each measurement adds its own entry here.
MEASUREMENTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "collect": _collect,
    "a2c": _a2c,
    "ppo": _ppo,
}
# The headline ratio of each measurement, printed at the end.
HEADLINES = {"collect": "atari_collect_vs_raw", "a2c": "a2c_vs_sb3", "ppo": "ppo_vs_sb3"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated measurements: {', '.join(MEASUREMENTS)}")
    parser.add_argument("--games", type=lambda s: s.split(","), default=list(ATARI6),
                        help="comma-separated game names (default: ATARI6)")
    parser.add_argument("--envs-per-game", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200, help="vector steps per timed chunk")
    parser.add_argument("--rounds", type=int, default=6, help="timed chunks of each side")
    parser.add_argument("--warmup", type=int, default=20, help="untimed vector steps of each")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="emulator threads in total (0: one per CPU core)")
    parser.add_argument("--a2c-envs", type=int, default=8, help="a2c: envs on one game (Pong)")
    parser.add_argument("--a2c-steps", type=int, default=8000,
                        help="a2c: env steps per timed training run")
    parser.add_argument("--a2c-rounds", type=int, default=5,
                        help="a2c and ppo: timed runs of each side")
    parser.add_argument("--ppo-steps", type=int, default=8192,
                        help="ppo: env steps per timed training run (a multiple of 8 × 128)")
    parser.add_argument("--device", default="auto", help="a2c: learner device (auto|cpu|cuda)")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in MEASUREMENTS]
    if unknown or not only:
        parser.error(f"--only {args.only!r}: choose from {', '.join(MEASUREMENTS)}")
    if min(args.steps, args.rounds, args.warmup, args.envs_per_game) < 1:
        parser.error("--steps, --rounds, --warmup and --envs-per-game must be positive")

    results: dict[str, Any] = {}
    for name in only:
        results.update(MEASUREMENTS[name](args))
    for name in only:
        key = HEADLINES.get(name)
        if key is not None and key in results:
            print(f"{key} = {results[key]:.3f}")
    if "atari_collect_vs_raw" in results:
        print(f"  (mtrl {results['mtrl_frames_per_s']:.0f} frames/s, raw ale_py "
              f"{results['raw_frames_per_s']:.0f} frames/s, medians; ratio of medians "
              f"{results['collect_ratio_of_medians']:.3f})")
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
