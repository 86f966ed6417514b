"""The markdown table of docs/BENCHMARKS.md ("MT-SAC against stable-baselines3 SAC on
Meta-World") from the result files of ``sac_vs_sb3_learning.py``: one row per task, success at
three points of the curve for each side (means over seeds), mtrl − SB3 at the final step and
averaged over the curve with standard errors over seeds, and whether mtrl is within one episode
in ten of SB3 on both.

    python benchmarks/sac_vs_sb3_table.py benchmarks/results/sac_vs_sb3_*.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sac_vs_sb3_learning import summarize


def _points(steps: list[int]) -> list[int]:
    """Three steps of a curve to show: a third, two thirds and the end (the nearest present)."""
    end = steps[-1]
    return sorted({min(steps, key=lambda s, f=f: abs(s - f * end)) for f in (1 / 3, 2 / 3, 1)})


def _k(step: int) -> str:
    return f"{step // 1000}k" if step % 1000 == 0 else str(step)


def _pm(value: float, se: float, n: int) -> str:
    return f"{value:+.2f} ± {se:.2f}" if n > 1 and math.isfinite(se) else f"{value:+.2f} (1 seed)"


def row(summary: dict[str, Any]) -> str | None:
    if "pass" not in summary:
        return None
    m, s = summary["sides"]["mtrl"], summary["sides"]["sb3"]
    seeds = summary["paired_seeds"]
    common = sorted(set(m["steps"]) & set(s["steps"]))
    pts = _points(common)

    def means(side: dict[str, Any]) -> str:
        return " / ".join(
            f"{sum(side['per_seed'][k][t] for k in seeds) / len(seeds):.2f}" for t in pts)

    task = summary["task"]
    return (f"| `{task}` | {len(seeds)} ({', '.join(map(str, seeds))}) | "
            f"{' / '.join(_k(t) for t in pts)} | {means(m)} | {means(s)} | "
            f"{_pm(summary['mtrl_minus_sb3_final'], summary['se_final'], len(seeds))} | "
            f"{_pm(summary['mtrl_minus_sb3_curve'], summary['se_curve'], len(seeds))} | "
            f"{'yes' if summary['pass'] else 'no'} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="result JSON files of the benchmark")
    args = p.parse_args(argv)
    print("| task | seeds | env steps | mtrl success | SB3 success | mtrl − SB3 at the end "
          "(± SE) | averaged over the curve (± SE) | within 0.1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in args.files:
        runs = json.loads(path.read_text())["runs"]
        for task in sorted({r["job"]["task"] for r in runs}):
            # the runs of the longest budget of this task, as one comparison
            steps = max(r["job"]["steps"] for r in runs if r["job"]["task"] == task)
            line = row(summarize([r for r in runs if r["job"]["task"] == task
                                  and r["job"]["steps"] == steps], task))
            if line:
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
