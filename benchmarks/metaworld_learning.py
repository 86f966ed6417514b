"""Learning evidence on Meta-World: mtrl's MT-SAC against stable-baselines3's SAC, at budgets
long enough for SAC to solve the tasks, as one resumable job.

The plan (``--part``):

* ``single``: single-task SAC sanity on Meta-World v3 tasks that SAC is known to solve
  quickly (``--tasks``, default ``drawer-close-v3 reach-v3 window-open-v3
  button-press-topdown-v3``), ``--single-steps`` env steps each (default 100k; warm-up 2k,
  batch 256, evaluation every 10k);
* ``mt10``: MT10 with ``--mt10-steps`` (default 500k; warm-up 10k, batch 1280, evaluation every
  50k): mtrl's ``mt10-mtsac`` against SB3 SAC with the one-hot task appended to the observation,
  on the same envs and seeds.

Every run is one (side, task, seed) of :mod:`sac_vs_sb3_learning` (that module's docstring says
how the two sides are made identical: same envs, seeds, hyperparameters, and the *same*
evaluation function), run in its own process, ``--jobs`` at once. Finished runs are appended to
``--json`` as they end and skipped when the command is run again with the same plan, and every
run saves its whole training state in ``--work-dir`` (default ``runs/metaworld_learning``) at
each evaluation, so the job can be stopped (Ctrl-C, or the machine going away) and continued:
a run in progress continues from its last evaluation (the result lists the steps it resumed
at). A run's directory is deleted once its result is in ``--json``; an MT10 run's state is
~0.5 GB on each side. ``--import`` takes finished runs of the same settings from files of
``sac_vs_sb3_learning.py``. At the end (and with ``--report`` without running anything) it
prints, for every task, the mean success of both sides at three points of the curve, mtrl −
SB3 at the end and over the curve with standard errors over seeds, MT10's success per task for
both sides, and with ``--plot`` the curves; the exit status is 1 if mtrl is more than 0.1 below
SB3 on any task with both sides finished.

Cost on the 2-core machine of this repository (``--jobs 2``, one torch thread per run): a
100k-step single-task run ~40-50 min per side, an MT10 run ~80 min per 200k steps per side.

    python benchmarks/metaworld_learning.py --json benchmarks/results/metaworld_learning.json \\
        --part single --seeds 0 1 2 --plot docs/img/metaworld_learning.png
    python benchmarks/metaworld_learning.py --json benchmarks/results/metaworld_learning.json \\
        --part mt10 --seeds 0
    python benchmarks/metaworld_learning.py --json benchmarks/results/metaworld_learning.json \\
        --report --plot docs/img/metaworld_learning.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sac_vs_sb3_learning import Job, progress, run_jobs, summarize
from sac_vs_sb3_table import per_task_table, plot, row

SINGLE_TASKS = ["drawer-close-v3", "reach-v3", "window-open-v3", "button-press-topdown-v3"]


def plan(args: argparse.Namespace, threads: int) -> list[Job]:
    """The runs of the chosen parts, seeds and sides, in the order they are started: seed by
    seed, so that stopping early leaves whole seeds of every task rather than all seeds of the
    first task."""
    jobs: list[Job] = []
    for seed in args.seeds:
        if args.part in ("single", "all"):
            for task in args.tasks:
                jobs += [Job(side, task, seed, args.single_steps, 2000, 256, 10_000,
                             args.eval_episodes, threads) for side in args.sides]
        if args.part in ("mt10", "all"):
            jobs += [Job(side, "mt10", seed, args.mt10_steps, 10_000, 1280, 50_000,
                         args.eval_episodes, threads) for side in args.sides]
    return jobs


def _load(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"metaworld_learning: {path} is not a result file of this benchmark "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and "key" in r for r in runs):
        raise SystemExit(f"metaworld_learning: {path}: 'runs' is not a list of runs")
    return runs


def report(runs: list[dict[str, Any]], plot_path: Path | None) -> bool:
    """Print the comparison of every task in ``runs`` (its longest budget); True if mtrl is
    within 0.1 of SB3 wherever both sides have finished runs."""
    tasks = sorted({r["job"]["task"] for r in runs}, key=lambda t: (t == "mt10", t))
    comparisons = []
    for task in tasks:
        steps = max(r["job"]["steps"] for r in runs if r["job"]["task"] == task)
        comparisons.append((task, [r for r in runs if r["job"]["task"] == task
                                   and r["job"]["steps"] == steps]))
    print("| task | seeds | env steps | mtrl success | SB3 success | mtrl − SB3 at the end "
          "(± SE) | averaged over the curve (± SE) | within 0.1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for task, task_runs in comparisons:
        summary = summarize(task_runs, task)
        line = row(summary)
        if line is None:
            sides = ", ".join(f"{side}: seeds {s['seeds']}" for side, s in
                              summary["sides"].items())
            print(f"| `{task}` | only {sides} | | | | | | |")
            continue
        print(line)
        ok = ok and bool(summary["pass"])
    for task, task_runs in comparisons:
        if task == "mt10":
            for line in per_task_table(task, task_runs):
                print(line)
    if plot_path is not None and comparisons:
        plot(comparisons, plot_path)
        print(f"wrote {plot_path}")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True,
                   help="results file: finished runs are appended, and skipped when run again")
    p.add_argument("--part", choices=["single", "mt10", "all"], default="all")
    p.add_argument("--tasks", nargs="+", default=SINGLE_TASKS,
                   help="Meta-World v3 tasks of the single-task part")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sides", nargs="+", default=["mtrl", "sb3"], choices=["mtrl", "sb3"])
    p.add_argument("--single-steps", type=int, default=100_000)
    p.add_argument("--mt10-steps", type=int, default=500_000)
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per task")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (processes)")
    p.add_argument("--import", dest="imports", nargs="*", type=Path, default=[],
                   help="result files of sac_vs_sb3_learning.py: their runs of this plan count "
                        "as done")
    p.add_argument("--work-dir", type=Path, default=Path("runs/metaworld_learning"),
                   help="each run's saved state, to continue a stopped run from its last "
                        "evaluation")
    p.add_argument("--report", action="store_true", help="run nothing; report --json")
    p.add_argument("--plot", type=Path, default=None, help="write the success curves here")
    args = p.parse_args(argv)
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    bad = [t for t in args.tasks if t not in ALL_V3_ENVIRONMENTS]
    if bad:
        p.error(f"--tasks: not Meta-World v3 tasks: {', '.join(bad)}")
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    jobs = plan(args, threads)
    results = _load(args.json)
    done = {r["key"] for r in results}
    for path in args.imports:
        wanted = {j.key() for j in jobs}
        new = [r for r in _load(path) if r["key"] in wanted and r["key"] not in done]
        results += new
        done |= {r["key"] for r in new}
        print(f"imported {len(new)} run(s) of this plan from {path}")

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps({"runs": results}, indent=1))
        os.replace(tmp, args.json)  # a stopped job never leaves half a file

    todo = [] if args.report else [j for j in jobs if j.key() not in done]
    if not args.report:
        print(f"{len(jobs) - len(todo)} of {len(jobs)} runs of the plan already done; running "
              f"{len(todo)}, {args.jobs} at once, {threads} torch thread(s) each", flush=True)
        save()
    def done_one(j: Job, res: dict[str, Any]) -> None:
        results.append(res)
        save()

    run_jobs(todo, args.jobs, done_one, args.work_dir)
    keys = {j.key() for j in jobs} if not args.report else {r["key"] for r in results}
    ok = report([r for r in results if r["key"] in keys], args.plot)
    report_progress([j for j in jobs if j.key() not in done], args.work_dir)
    return 0 if ok else 1


def report_progress(unfinished: list[Job], work_dir: Path) -> None:
    """Print the curves so far of the plan's runs that are saved in ``work_dir`` unfinished
    (a stopped job, or one still running in another process)."""
    lines = []
    for j in unfinished:
        curve = progress(work_dir, j)
        if curve:
            points = " ".join(f"{k // 1000}k:{v:.2f}" for k, v in curve.items())
            lines.append(f"- {j.side} `{j.task}` seed {j.seed} ({j.steps // 1000}k planned): "
                         f"{points}")
    if lines:
        print(f"\nRuns in progress (success at each evaluation so far; state in {work_dir}):")
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
