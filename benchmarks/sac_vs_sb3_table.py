"""The markdown table of docs/BENCHMARKS.md ("MT-SAC against stable-baselines3 SAC on
Meta-World") from the result files of ``sac_vs_sb3_learning.py``: one row per task, success at
three points of the curve for each side (means over seeds), mtrl − SB3 at the final step and
averaged over the curve with standard errors over seeds, and whether mtrl is within one episode
in ten of SB3 on both; with ``--per-task``, success per task at the final step for runs that
recorded it (MT10); with ``--plot P``, one panel per task with both sides' mean success curves
± one standard error over seeds.

    python benchmarks/sac_vs_sb3_table.py benchmarks/results/sac_vs_sb3_*.json --per-task \
        --plot docs/img/sac_vs_sb3.png
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


def _comparisons(files: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(task, runs of its longest budget) for every task in the files."""
    out = []
    for path in files:
        runs = json.loads(path.read_text())["runs"]
        for task in sorted({r["job"]["task"] for r in runs}):
            steps = max(r["job"]["steps"] for r in runs if r["job"]["task"] == task)
            out.append((task, [r for r in runs if r["job"]["task"] == task
                               and r["job"]["steps"] == steps]))
    return out


def per_task_table(task: str, runs: list[dict[str, Any]]) -> list[str]:
    """Success per task at the final step, mean over seeds, for both sides (runs that recorded
    per-task success)."""
    final: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        ts = r.get("task_success")
        if ts:
            last = max(ts, key=int)
            final.setdefault(r["job"]["side"], []).append(ts[last])
    if set(final) != {"mtrl", "sb3"}:
        return []
    names = list(final["mtrl"][0])
    lines = [f"\n{task}: success per task at the final step (mean over "
             f"{len(final['mtrl'])} / {len(final['sb3'])} seeds)",
             "| task | mtrl | SB3 |", "| --- | --- | --- |"]
    for t in names:
        m = sum(d[t] for d in final["mtrl"]) / len(final["mtrl"])
        b = sum(d[t] for d in final["sb3"]) / len(final["sb3"])
        lines.append(f"| `{t}` | {m:.2f} | {b:.2f} |")
    return lines


def plot(comparisons: list[tuple[str, list[dict[str, Any]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = min(3, len(comparisons))
    rows = math.ceil(len(comparisons) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (task, runs) in zip(axes.flat, comparisons, strict=False):
        for side, colour in (("mtrl", "tab:blue"), ("sb3", "tab:orange")):
            curves = [r["success"] for r in runs if r["job"]["side"] == side]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(map(int, c)) for c in curves)))
            y = np.array([[c[str(t)] for t in steps] for c in curves])
            mean = y.mean(0)
            se = y.std(0, ddof=1) / math.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mean)
            n = len(y)
            label = (f"{'mtrl MT-SAC' if side == 'mtrl' else 'SB3 SAC'} "
                     f"({n} seed{'' if n == 1 else 's'})")
            ax.plot(steps, mean, color=colour, label=label)
            ax.fill_between(steps, mean - se, mean + se, color=colour, alpha=0.2)
        ax.set_title(task)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval success")
        ax.legend(fontsize=8, loc="upper left")
    for ax in list(axes.flat)[len(comparisons):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="result JSON files of the benchmark")
    p.add_argument("--per-task", action="store_true",
                   help="also print success per task at the final step (runs that recorded it)")
    p.add_argument("--plot", type=Path, default=None, help="write the success curves here")
    args = p.parse_args(argv)
    comparisons = _comparisons(args.files)
    print("| task | seeds | env steps | mtrl success | SB3 success | mtrl − SB3 at the end "
          "(± SE) | averaged over the curve (± SE) | within 0.1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for task, runs in comparisons:  # the runs of each task's longest budget
        line = row(summarize(runs, task))
        if line:
            print(line)
    if args.per_task:
        for task, runs in comparisons:
            for line in per_task_table(task, runs):
                print(line)
    if args.plot is not None:
        plot(comparisons, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
