"""Multi-seed reports: per-method mean success, IQM with bootstrap confidence intervals.

Aggregate statistics follow Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (NeurIPS): with a score matrix ``[runs, tasks]`` (one run = one seed),

* the interquartile mean (IQM) is the mean of the middle 50% of all ``runs × tasks`` scores —
  the mean after discarding the lowest and the highest 25% (``trim_mean(·, 0.25)``: for ``n``
  scores, ``⌊n/4⌋`` are dropped at each end);
* 95% confidence intervals come from the *stratified* percentile bootstrap: each resample draws,
  for every task independently, ``runs`` scores with replacement from that task's runs, and the
  interval is the 2.5th–97.5th percentile of the statistic over resamples.

A run's scores are its latest evaluation (``eval/step_*.json``, written by training and by
``mtrl eval --json``), so the protocol of the numbers is the evaluation protocol of mtrl.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class RunDataError(ValueError):
    """A run lacks, or has garbled, the data a report or plot needs (evaluation results,
    learning curves); the message names the run or file and what is missing."""


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries: drop ``⌊n/4⌋`` lowest and highest, average the rest."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("IQM of no scores")
    cut = x.size // 4
    return float(x[cut: x.size - cut].mean())


def mean_score(scores: np.ndarray) -> float:
    return float(np.asarray(scores, dtype=np.float64).mean())


def stratified_bootstrap_ci(
    scores: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` over a ``[runs, tasks]`` score matrix,
    resampling runs with replacement within each task (stratified bootstrap)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1:
        raise ValueError(f"scores must be [runs, tasks], got shape {s.shape}")
    runs, tasks = s.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    resampled = np.take_along_axis(s[None].repeat(reps, 0), idx, axis=1)
    stats = np.array([statistic(r) for r in resampled])
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


@dataclass
class RunScores:
    run_dir: str
    method: str
    seed: int
    step: int
    tasks: dict[str, float]
    episodes_per_task: int
    meta: dict[str, Any]


def latest_eval_path(run_dir: str | Path) -> Path:
    """The newest evaluation JSON file of a run (largest step); FileNotFoundError if none."""
    files = sorted((Path(run_dir) / "eval").glob("step_*.json"))
    if not files:
        raise FileNotFoundError(
            f"{run_dir} has no evaluation results (eval/step_*.json); run `mtrl eval {run_dir}`"
        )
    return files[-1]


def latest_eval(run_dir: str | Path) -> dict[str, Any]:
    """The newest evaluation JSON of a run (largest step); RunDataError naming the file if it
    is not a JSON object."""
    path = latest_eval_path(run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise RunDataError(f"{path} is not valid JSON: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise RunDataError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _eval_scores(ev: dict[str, Any], source: str) -> tuple[int, int, dict[str, float]]:
    """``(step, episodes_per_task, {task: success})`` of an evaluation JSON; RunDataError
    naming ``source`` and the missing or wrong entry."""
    tasks = ev.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise RunDataError(f"{source} has no per-task results ('tasks': {{task: {{...}}}})")
    try:
        step = int(ev["step"])
        episodes = int(ev["episodes_per_task"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise RunDataError(f"{source} lacks an integer 'step' and 'episodes_per_task'") \
            from None
    scores = {}
    for task, row in tasks.items():
        value = row.get("success") if isinstance(row, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not np.isfinite(value):
            raise RunDataError(f"{source}: task {task!r} has no numeric 'success' "
                               f"(got {value!r})")
        scores[str(task)] = float(value)
    return step, episodes, scores


def load_run(run_dir: str | Path, method: str | None = None) -> RunScores:
    """Scores and comparability facts of one run directory."""
    from mtrl.rundir import RunDir

    run_dir = Path(run_dir)
    cfg = RunDir(run_dir).config()
    ev = latest_eval(run_dir)
    step, episodes, scores = _eval_scores(ev, str(latest_eval_path(run_dir)))
    metadata = RunDir(run_dir).metadata()
    bench = metadata.get("benchmark", {})
    if not isinstance(bench, dict):
        raise RunDataError(f"{RunDir(run_dir).metadata_path}: 'benchmark' must be a JSON "
                           f"object, got {type(bench).__name__}")
    num_tasks = len(scores)
    return RunScores(
        run_dir=str(run_dir),
        method=method or cfg.preset or cfg.env.name,
        seed=cfg.seed,
        step=step,
        tasks=scores,
        episodes_per_task=episodes,
        meta={
            "benchmark": bench.get("name", cfg.env.name),
            "reward_version": bench.get("reward_function_version"),
            "episode_length": bench.get("episode_length"),
            "env_steps": step,
            "steps_per_task": step // max(num_tasks, 1),
            "episodes_per_task": episodes,
        },
    )


def build_report(runs: Sequence[RunScores], *, reps: int = 2000, seed: int = 0
                 ) -> dict[str, Any]:
    """Group runs by method and aggregate across seeds (see the module docstring)."""
    methods: dict[str, list[RunScores]] = {}
    for r in runs:
        methods.setdefault(r.method, []).append(r)
    out: dict[str, Any] = {
        "protocol": "success = 1 if the success flag was ever 1 in an episode; deterministic "
                    "policy; scores = per-task success rate of each run's latest evaluation",
        "statistics": "IQM = mean of the middle 50% of run×task scores; 95% CI = stratified "
                      f"percentile bootstrap over runs ({reps} resamples), Agarwal et al. 2021",
        "methods": {},
    }
    for name, rs in methods.items():
        task_names = list(rs[0].tasks)
        for r in rs:
            if list(r.tasks) != task_names:
                raise RunDataError(f"method {name!r}: runs {rs[0].run_dir} and {r.run_dir} "
                                   "were evaluated on different tasks")
        scores = np.array([[r.tasks[t] for t in task_names] for r in rs])
        metas = {json.dumps(r.meta, sort_keys=True) for r in rs}
        out["methods"][name] = {
            "runs": [r.run_dir for r in rs],
            "seeds": [r.seed for r in rs],
            "num_runs": len(rs),
            "success_mean": mean_score(scores),
            "success_mean_ci95": list(stratified_bootstrap_ci(scores, mean_score, reps=reps,
                                                              seed=seed)),
            "iqm": iqm(scores),
            "iqm_ci95": list(stratified_bootstrap_ci(scores, iqm, reps=reps, seed=seed)),
            "per_run_mean": [float(x) for x in scores.mean(1)],
            "tasks": {t: {"mean": float(scores[:, i].mean()), "std": float(scores[:, i].std()),
                          "per_run": [float(x) for x in scores[:, i]]}
                      for i, t in enumerate(task_names)},
            "metadata": rs[0].meta if len(metas) == 1 else [r.meta for r in rs],
        }
    return out


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a method table (mean, IQM, CIs) and a per-task table."""
    lines = ["| method | runs | success mean [95% CI] | IQM [95% CI] | env steps / task |",
             "| --- | --- | --- | --- | --- |"]
    for name, m in report["methods"].items():
        meta = m["metadata"] if isinstance(m["metadata"], dict) else m["metadata"][0]
        lo, hi = m["success_mean_ci95"]
        ilo, ihi = m["iqm_ci95"]
        lines.append(f"| {name} | {m['num_runs']} | {m['success_mean']:.3f} [{lo:.3f}, {hi:.3f}]"
                     f" | {m['iqm']:.3f} [{ilo:.3f}, {ihi:.3f}] | {meta['steps_per_task']} |")
    names = list(report["methods"])
    tasks: list[str] = []
    for m in report["methods"].values():
        tasks += [t for t in m["tasks"] if t not in tasks]
    lines += ["", "| task | " + " | ".join(names) + " |",
              "| --- |" + " --- |" * len(names)]
    for t in tasks:
        cells = []
        for n in names:
            row = report["methods"][n]["tasks"].get(t)
            cells.append("" if row is None else f"{row['mean']:.2f} ± {row['std']:.2f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", f"Protocol: {report['protocol']}.", f"Statistics: {report['statistics']}."]
    return "\n".join(lines) + "\n"
