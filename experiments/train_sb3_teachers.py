"""Train one stable-baselines3 teacher per task of the point-reach toy, for policy distillation.

    python experiments/train_sb3_teachers.py --num-tasks 3 --discrete --out runs/teachers-d3
    python experiments/train_sb3_teachers.py --num-tasks 3 --algo sac --out runs/teachers-c3

Writes ``<out>/goal-<k>.zip`` (one model per task) and ``<out>/teachers.json``, then prints
each teacher's deterministic success on its own task (an episode succeeds if ``success`` is 1
at any step). The zips are teachers for :func:`mtrl.teachers.load_teacher`.
Needs stable-baselines3 (``pip install "mtrl[sb3]"``).
"""

from __future__ import annotations

import argparse
import time

from mtrl.sb3 import TOY_TEACHER_SETTINGS, evaluate_sb3_success, train_toy_teachers


def main(argv: list[str] | None = None) -> int:
    algos = sorted({a for a, _ in TOY_TEACHER_SETTINGS})
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-tasks", type=int, default=3, help="tasks of the toy (default 3)")
    p.add_argument("--discrete", action="store_true",
                   help="toy-reach-discrete (5 actions) instead of continuous actions")
    p.add_argument("--algo", default="ppo", choices=algos,
                   help="SB3 algorithm (dqn/a2c: discrete only; sac: continuous only)")
    p.add_argument("--steps", type=int, default=None,
                   help="env steps per teacher (default: the algorithm's toy budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per teacher")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    paths = train_toy_teachers(args.out, args.num_tasks, discrete=args.discrete,
                               total_timesteps=args.steps, seed=args.seed, algo=args.algo)
    seconds = time.perf_counter() - t0
    print(f"trained {len(paths)} {args.algo.upper()} teachers in {seconds:.1f} s -> {args.out}")
    for k, (task, path) in enumerate(paths.items()):
        success = evaluate_sb3_success(path, k, args.num_tasks, discrete=args.discrete,
                                       episodes=args.episodes)
        print(f"{task:<10} success {success:.2f}  ({path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
