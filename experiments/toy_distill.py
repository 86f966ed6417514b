"""Policy distillation end to end on the point-reach toy: train one stable-baselines3 PPO
teacher per goal, then distil them into one multi-task student (`mtrl distill toy-distill`)
and compare the student's success with the teachers' under the same protocol.

    python experiments/toy_distill.py --teachers runs/toy-teachers --run-dir runs/toy-distill
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtrl.config import validate
from mtrl.presets import get_preset
from mtrl.runner import train
from mtrl.sb3 import train_toy_teachers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teachers", default="runs/toy-teachers",
                   help="where the teachers go (reused if they exist)")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="mix", choices=["teacher", "student", "mix"])
    args = p.parse_args()

    cfg = get_preset("toy-distill")
    cfg.seed = args.seed
    cfg.agent.distill.data = args.data
    tasks = [f"goal-{k}" for k in range(cfg.env.num_tasks)]
    out = Path(args.teachers)
    if not all((out / f"{t}.zip").exists() for t in tasks):
        train_toy_teachers(out, cfg.env.num_tasks, discrete=True, seed=args.seed)
    cfg.agent.distill.teachers = [str(out)]
    validate(cfg)
    result = train(cfg, args.run_dir)
    ref = json.loads((Path(result.run_dir) / "eval" / "teachers.json").read_text())
    assert result.final_eval is not None
    print(result.final_eval.table())
    print(f"student success {result.final_eval.success_mean:.3f}, teachers "
          f"{ref['success_mean']:.3f} (same protocol); run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
