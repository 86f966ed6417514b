"""Slow learning check: does MT-A2C + PopArt improve on several Atari games at once, on a CPU?

Trains ``atari6-a2c-popart`` (Pong, Breakout, SpaceInvaders, Seaquest, BeamRider, Qbert; 8 envs
per game, unclipped rewards) for ``--total-steps`` env steps summed over the 48 envs (default
1.5M, i.e. ~250k agent steps = 1M frames per game; about 25 minutes on 2 CPU cores), then reads
every finished training episode's unclipped return from the run's TensorBoard events
(``train/episode_return/<game>``) and compares, per game, the mean return of the first and of
the last ``--fraction`` of its episodes. A game counts as *rising* when the last-episodes mean
exceeds the first-episodes mean by more than two standard errors of the difference. The check
passes when at least ``--min-games`` (2) games rise.

    python benchmarks/atari_learning.py --run-dir runs/atari6-learning --json P

``tests/test_learning_slow.py::test_atari6_a2c_popart_returns_rise`` runs the same function.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np


def episode_returns(run_dir: Path, games: list[str]) -> dict[str, list[float]]:
    """Every training episode's return per game, in step order, from TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    out = {}
    for g in games:
        tag = f"train/episode_return/{g}"
        out[g] = [e.value for e in ea.Scalars(tag)] if tag in tags else []
    return out


def rising(returns: list[float], fraction: float) -> dict[str, Any]:
    """First vs last ``fraction`` of the episodes: means, difference, its standard error."""
    n = len(returns)
    k = max(2, int(n * fraction))
    if n < 2 * k or n < 4:
        return {"episodes": n, "rising": False, "reason": "too few episodes"}
    first, last = np.asarray(returns[:k]), np.asarray(returns[-k:])
    se = math.sqrt(first.var(ddof=1) / k + last.var(ddof=1) / k)
    diff = float(last.mean() - first.mean())
    return {"episodes": n, "window": k, "first_mean": float(first.mean()),
            "last_mean": float(last.mean()), "diff": diff, "diff_se": se,
            "rising": bool(diff > 2.0 * se and diff > 0)}


def run_check(run_dir: Path, *, total_steps: int = 1_500_000, fraction: float = 0.2,
              min_games: int = 2, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    from mtrl.presets import get_preset
    from mtrl.runner import train

    cfg = get_preset("atari6-a2c-popart")
    cfg.total_steps = total_steps
    cfg.seed = seed
    cfg.device = device
    cfg.eval.every = 0
    cfg.eval.final = False
    cfg.checkpoint.every = 0
    cfg.log.progress_bar = False
    t0 = time.perf_counter()
    res = train(cfg, run_dir)
    minutes = (time.perf_counter() - t0) / 60
    games = list(cfg.env.tasks)
    per_game = {g: rising(r, fraction) for g, r in episode_returns(run_dir, games).items()}
    n_rising = sum(v["rising"] for v in per_game.values())
    return {"preset": cfg.preset, "env_steps": res.env_steps, "minutes": minutes,
            "seed": seed, "fraction": fraction, "games": per_game, "rising_games": n_rising,
            "passed": n_rising >= min_games}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=Path("runs/atari6-learning"))
    p.add_argument("--total-steps", type=int, default=1_500_000)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    out = run_check(a.run_dir, total_steps=a.total_steps, fraction=a.fraction, seed=a.seed,
                    device=a.device)
    for g, v in out["games"].items():
        if "first_mean" in v:
            print(f"{g:<14} episodes {v['episodes']:>5}  first {v['first_mean']:>9.1f}  "
                  f"last {v['last_mean']:>9.1f}  diff {v['diff']:>+8.1f} ± {v['diff_se']:.1f}"
                  f"  {'RISING' if v['rising'] else ''}")
        else:
            print(f"{g:<14} episodes {v['episodes']:>5}  ({v['reason']})")
    print(f"{out['rising_games']} of {len(out['games'])} games rising after {out['env_steps']} "
          f"env steps in {out['minutes']:.1f} min: {'PASS' if out['passed'] else 'FAIL'}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
