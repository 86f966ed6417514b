"""Learning curves from TensorBoard event files (``mtrl plot RUN_DIR ... --out FILE.png``) and
performance profiles of the runs' latest evaluations (``mtrl plot --profile``).

Curves: a grid of panels (at most :data:`MAX_COLS` columns, each panel
:data:`PANEL_H` inches = 319 px high at :data:`DPI`): the aggregate over tasks, then one panel
per task titled with its name; x = env steps from 0 (an evaluation at step 0 is drawn when the
run has one), y = success rate, human-normalized score (benchmarks without a success flag:
Atari) or return. Runs are grouped as in reports (:func:`mtrl.analysis.group_labels`: by the
method fields of their configs, ``--label``, ``--group-by``); a group with several runs (seeds)
is drawn as the mean curve with a shaded band of ± one standard error, a single run as its
curve. A group whose runs differ in budget, benchmark, tasks, evaluation protocol or last
evaluation step is refused, or with ``allow_mixed`` drawn as one series per value — curves are
never cut to the shortest run silently: runs of one series are drawn over the env steps they
all cover, and a note says when that leaves out a visible part of a run's curve.

Profiles: rliable's score distributions (the fraction of runs × tasks scoring above τ, with
95% stratified bootstrap bands) of each group's latest evaluations, the scores of
``mtrl report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis import (
    BENCHMARK_KEYS,
    Fact,
    RunDataError,
    benchmark_fact,
    budget_fact,
    protocol_fact,
    split_mixed,
    tasks_fact,
)

METRICS = {
    "eval-success": ("eval/success", "eval success rate"),
    "train-success": ("train/success", "train success rate"),
    "eval-return": ("eval/return", "eval return"),
    "train-return": ("train/episode_return", "train episode return"),
    "eval-hns": ("eval/hns", "eval human-normalized score"),
    "train-hns": ("train/hns", "train human-normalized score"),
}

#: ``--metric auto``: eval-success, or eval-hns for benchmarks without a success flag.
AUTO_METRIC = "auto"

#: Figure layout: panel size in inches, resolution, columns of the grid.
PANEL_W, PANEL_H, DPI, MAX_COLS = 3.6, 2.9, 110, 4
_HEADER = 0.65  # inches above the panels (title)

#: Why a run can lack a metric's curves.
_MISSING = {
    "eval": "it has not been evaluated during training yet (eval.every=0 evaluates only at "
            "the end, and eval.final=false never)",
    "train": "no training episode has finished yet",
}


def missing_curves_message(run_dir: str | Path, metric: str, has_success: bool = True) -> str:
    """One line: run ``run_dir`` has no curves of ``metric``, and why that happens."""
    prefix, _ = METRICS[metric]
    why = _MISSING[metric.split("-")[0]]
    if metric.endswith("-success") and not has_success:
        why = ("its benchmark has no success flag (Atari); plot --metric "
               f"{metric.split('-')[0]}-hns or {metric.split('-')[0]}-return")
    elif metric.endswith("-hns") and has_success:
        why = ("its benchmark has no human-normalized scores (only Atari has); plot --metric "
               f"{metric.split('-')[0]}-success or {metric.split('-')[0]}-return")
    return (f"{run_dir} has no {metric} curves (no '{prefix}/<task>' scalars in its event "
            f"files): {why}")


def read_scalars(run_dir: str | Path, prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{task: (steps, values)}`` for every scalar tag ``<prefix>/<task>`` in the run's event
    files (later events of a step win, so a resumed run reads cleanly)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    out = {}
    for tag in ea.Tags()["scalars"]:
        if not tag.startswith(prefix + "/"):
            continue
        task = tag[len(prefix) + 1:]
        by_step = {e.step: e.value for e in ea.Scalars(tag)}
        steps = np.array(sorted(by_step), dtype=np.float64)
        out[task] = (steps, np.array([by_step[s] for s in sorted(by_step)], dtype=np.float64))
    return out


def _align(curves: Sequence[tuple[np.ndarray, np.ndarray]]
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """Curves on common steps: the steps every curve covers (linear interpolation inside each
    curve's range) and ``[curves, steps]`` values; None when they share no step."""
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    steps = np.unique(np.concatenate([c[0] for c in curves]))
    steps = steps[(steps >= lo) & (steps <= hi)]
    if steps.size == 0:
        return None
    return steps, np.stack([np.interp(steps, s, v) for s, v in curves])


def _iqm_rows(values: np.ndarray) -> np.ndarray:
    """IQM over axis 0 (``⌊n/4⌋`` dropped at each end), for every column."""
    x = np.sort(values, axis=0)
    cut = x.shape[0] // 4
    return x[cut: x.shape[0] - cut].mean(0)


#: Aggregate panels: title → statistic over tasks of one run's ``[tasks, steps]`` values.
_AGGREGATES = {
    "success": {"mean over tasks": lambda v: v.mean(0)},
    "hns": {"median over games": lambda v: np.median(v, 0),
            "IQM over games": _iqm_rows,
            "mean over games": lambda v: v.mean(0)},
}


def _benchmark(run_dir: str | Path, cfg: Any, metadata: Mapping[str, Any]) -> dict[str, Any]:
    bench = metadata.get("benchmark", {})
    if not isinstance(bench, dict):
        raise RunDataError(f"{Path(run_dir) / 'metadata.json'}: 'benchmark' must be a JSON "
                           f"object, got {type(bench).__name__}")
    out = {"env": cfg.env.name, **{k: bench.get(k) for k in BENCHMARK_KEYS}}
    out["has_success"] = bench.get("has_success") is not False
    if out["episode_length"] is None and cfg.env.name.startswith("toy"):
        out["episode_length"] = cfg.env.max_episode_steps
    return out


def resolve_metric(metric: str, run_dirs: Sequence[str | Path], has_success: Sequence[bool]
                   ) -> str:
    """``auto`` → eval-success, or eval-hns when no run's benchmark has a success flag;
    RunDataError when the runs mix both kinds."""
    if metric != AUTO_METRIC:
        return metric
    if all(has_success):
        return "eval-success"
    if not any(has_success):
        return "eval-hns"
    with_flag = [str(d) for d, h in zip(run_dirs, has_success, strict=True) if h]
    without = [str(d) for d, h in zip(run_dirs, has_success, strict=True) if not h]
    raise RunDataError(f"the runs mix benchmarks with a success flag ({', '.join(with_flag)}) "
                       f"and without ({', '.join(without)}); plot them separately, or choose "
                       "--metric eval-return")


def _layout(n_panels: int, labels: Sequence[str]) -> tuple[int, int, float, float, int, float]:
    """``(cols, rows, width, height, legend columns, footer height)`` in inches."""
    cols = min(MAX_COLS, n_panels)
    rows = math.ceil(n_panels / cols)
    width = cols * PANEL_W
    entry = 0.7 + 0.075 * max((len(s) for s in labels), default=10)
    ncol = max(1, min(len(labels), int(width // entry)))
    footer = 0.8 + 0.26 * math.ceil(max(len(labels), 1) / ncol)  # tick labels, x label, legend
    return cols, rows, width, _HEADER + rows * PANEL_H + footer, ncol, footer


def _save(fig: Any, out: str | Path) -> None:
    import matplotlib.pyplot as plt

    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=DPI)
    finally:
        plt.close(fig)


def _split_notes(splits: Mapping[str, tuple[str, list[str]]]) -> list[str]:
    """One note per group that ``allow_mixed`` split into series."""
    parts: dict[str, list[str]] = {}
    for new, (old, by) in splits.items():
        parts.setdefault(f"{old!r} differ in {' and '.join(by)}", []).append(new)
    return [f"note: the runs of group {what}; drawn as {len(new)} separate series: "
            + "; ".join(repr(n) for n in new) for what, new in parts.items()]


def _fmt_steps(x: float) -> str:
    return f"{int(x):,}"


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    metric: str = AUTO_METRIC,
    methods: Sequence[str] | None = None,
    title: str | None = None,
    labels: Sequence[str] = (),
    group_by: str | None = None,
    allow_mixed: bool = False,
) -> dict[str, Any]:
    """Draw the curves of ``run_dirs`` into ``out`` (PNG). ``methods``: a group name per run
    (instead of the grouping by config, ``labels`` (``RUN=NAME``) and ``group_by``). Returns
    what was drawn: panel titles, series (methods), the number of curves, the metric, the runs
    of each series and notes (one line each), for callers and tests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtrl.analysis import group_labels
    from mtrl.rundir import RunDir

    if metric != AUTO_METRIC and metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {AUTO_METRIC}, "
                         f"{', '.join(METRICS)}")
    if methods is not None and len(methods) != len(run_dirs):
        raise ValueError(f"{len(methods)} method names for {len(run_dirs)} runs")
    configs = [RunDir(rd).config() for rd in run_dirs]
    benches = [_benchmark(rd, cfg, RunDir(rd).metadata())
               for rd, cfg in zip(run_dirs, configs, strict=True)]
    has_success = [bool(b["has_success"]) for b in benches]
    metric = resolve_metric(metric, run_dirs, has_success)
    prefix, ylabel = METRICS[metric]
    notes: list[str]
    if methods is not None:
        names, notes = list(methods), []
    else:
        names, notes = group_labels(run_dirs, configs, labels=labels, group_by=group_by)
    runs_data = []
    items: list[tuple[str, str, dict[str, Fact]]] = []
    for i, rd in enumerate(run_dirs):
        data = {task: curve for task, curve in read_scalars(rd, prefix).items()
                if curve[0].size and task != "mean"}
        if not data:
            raise RunDataError(missing_curves_message(rd, metric, has_success[i]))
        runs_data.append(data)
        cfg = configs[i]
        facts = {"benchmark": benchmark_fact(benches[i]), "tasks": tasks_fact(list(data)),
                 "budget": budget_fact(cfg.total_steps, len(data))}
        if metric.startswith("eval-"):
            last = int(max(c[0][-1] for c in data.values()))
            facts["last step"] = Fact(str(last), f"last evaluation at env step {last}",
                                      f"last eval at {last}")
            protocol = RunDir(rd).metadata().get("evaluation_protocol") or ""
            facts["protocol"] = protocol_fact(" ".join(str(protocol).split()),
                                              cfg.eval.episodes_per_task)
        items.append((str(rd), names[i], facts))
    series_names, splits = split_mixed(items, allow_mixed=allow_mixed, unit="series")
    notes += _split_notes(splits)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(series_names):
        groups.setdefault(name, []).append(i)
    tasks: list[str] = []
    for data in runs_data:
        tasks += [t for t in data if t not in tasks]
    kind = "hns" if metric.endswith("-hns") else "success"
    aggregates = _AGGREGATES[kind]
    panels = [*aggregates, *tasks]

    # Per series: its runs' common env-step range, with a note when it cuts a visible part.
    span = {}
    for name, idx in groups.items():
        spans = [(min(c[0][0] for c in runs_data[i].values()),
                  max(c[0][-1] for c in runs_data[i].values())) for i in idx]
        lo, hi = max(s[0] for s in spans), min(s[1] for s in spans)
        full = max(s[1] for s in spans) - min(s[0] for s in spans)
        span[name] = (float(lo), float(hi))
        if hi < lo:
            raise RunDataError(f"the curves of {name!r} share no env steps: " + "; ".join(
                f"{run_dirs[i]}: {_fmt_steps(a)}-{_fmt_steps(b)}"
                for i, (a, b) in zip(idx, spans, strict=True)))
        if any(a < lo - 0.01 * full or b > hi + 0.01 * full for a, b in spans):
            notes.append(f"note: the runs of {name!r} cover different env steps (" + "; ".join(
                f"{run_dirs[i]}: {_fmt_steps(a)}-{_fmt_steps(b)}"
                for i, (a, b) in zip(idx, spans, strict=True))
                + f"); its curve is drawn where all of them have data, "
                  f"{_fmt_steps(lo)}-{_fmt_steps(hi)}")

    cols, rows, width, height, ncol, footer = _layout(len(panels), list(groups))
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, sharex=True)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, top=1 - _HEADER / height,
                        bottom=footer / height, wspace=0.28, hspace=0.5)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_curves = 0
    for p, panel in enumerate(panels):
        ax = axes[p // cols][p % cols]
        for g, (name, idx) in enumerate(groups.items()):
            if panel in aggregates:
                curves = []
                for i in idx:
                    data = runs_data[i]
                    aligned = _align([data[t] for t in data])
                    if aligned is None:
                        raise RunDataError(f"{run_dirs[i]}: the curves of its tasks share no "
                                           "env steps")
                    curves.append((aligned[0], aggregates[panel](aligned[1])))
            else:
                curves = [runs_data[i][panel] for i in idx if panel in runs_data[i]]
            if not curves:
                continue
            aligned = _align(curves)
            if aligned is None:
                continue  # (a task that only some of the runs have: refused above)
            steps, vals = aligned
            mean = vals.mean(0)
            color = colors[g % len(colors)]
            label = f"{name} ({len(curves)} run{'s' if len(curves) > 1 else ''})"
            ax.plot(steps, mean, color=color, label=label if p == 0 else None,
                    marker="o" if steps.size == 1 else None)
            n_curves += 1
            if len(curves) > 1:
                se = vals.std(0, ddof=1) / np.sqrt(len(curves))
                ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        ax.set_title(panel, fontsize=9)
        if metric.endswith("-success"):
            ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(left=0)
        last_in_column = p + cols >= len(panels)
        if last_in_column:
            ax.set_xlabel("env steps")
            ax.xaxis.set_tick_params(labelbottom=True)
        if p % cols == 0:
            ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for q in range(len(panels), rows * cols):
        axes[q // cols][q % cols].axis("off")
    fig.legend(loc="lower center", ncol=ncol, fontsize=9,
               bbox_to_anchor=(0.5, 0.1 / height))
    band = "mean ± s.e. over runs" if kind == "success" else \
        "per-run statistic over games, mean ± s.e. over runs"
    fig.suptitle(title or f"{ylabel} per {'game' if kind == 'hns' else 'task'} ({band})",
                 fontsize=11, y=1 - 0.12 / height, va="top")
    _save(fig, out)
    return {"panels": panels, "methods": list(groups), "curves": n_curves, "metric": metric,
            "series": {name: [str(run_dirs[i]) for i in idx] for name, idx in groups.items()},
            "span": span, "notes": notes}


def plot_profiles(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    methods: Sequence[str] | None = None,
    title: str | None = None,
    labels: Sequence[str] = (),
    group_by: str | None = None,
    allow_mixed: bool = False,
    reps: int = 2000,
) -> dict[str, Any]:
    """Performance profiles (rliable score distributions with 95% bootstrap bands) of the
    runs' latest evaluations, one curve per group, into ``out`` (PNG). Runs are grouped and
    checked as in :func:`mtrl.analysis.build_report`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtrl.analysis import SCORES, group_runs, load_run, load_runs, performance_profiles

    notes: list[str]
    if methods is not None:
        runs = [load_run(d, method=m) for d, m in zip(run_dirs, methods, strict=True)]
        notes = []
    else:
        runs, notes = load_runs(run_dirs, labels=labels, group_by=group_by)
    groups, splits = group_runs(runs, allow_mixed=allow_mixed, unit="series")
    notes += _split_notes(splits)
    score = runs[0].score
    matrices = {}
    task_sets = set()
    for name, rs in groups.items():
        task_names = list(rs[0].tasks)
        task_sets.add(tuple(sorted(task_names)))
        matrices[name] = np.array([[r.tasks[t] for t in task_names] for r in rs])
    if len(task_sets) > 1:
        notes.append("note: the groups were evaluated on different tasks; each profile is "
                     "over its own group's tasks")
    top = max(1.0, max(float(m.max()) for m in matrices.values()))
    taus = np.linspace(0.0, top, 101)
    profiles, cis = performance_profiles(matrices, taus, reps=reps)
    entry = 0.7 + 0.075 * max(len(name) + 9 for name in groups)
    ncol = max(1, min(len(groups), int(7.5 // entry)))
    footer = 0.8 + 0.26 * math.ceil(len(groups) / ncol)
    height = 4.4 + footer
    fig, ax = plt.subplots(figsize=(7.5, height))
    fig.subplots_adjust(left=0.1, right=0.97, top=1 - 0.45 / height, bottom=footer / height)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for g, name in enumerate(groups):
        color = colors[g % len(colors)]
        n = len(groups[name])
        ax.plot(taus, profiles[name], color=color,
                label=f"{name} ({n} run{'s' if n > 1 else ''})")
        ax.fill_between(taus, cis[name][0], cis[name][1], color=color, alpha=0.2, lw=0)
    unit = SCORES[score]["task"]
    ax.set_xlabel(f"{SCORES[score]['name']} τ")
    ax.set_ylabel(f"fraction of runs × {unit}s with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, top)
    ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=ncol, fontsize=9, bbox_to_anchor=(0.5, 0.1 / height))
    ax.set_title(title or "performance profiles of the latest evaluations\n(rliable score "
                 f"distributions, 95% stratified bootstrap CIs, {reps} resamples)", fontsize=10)
    _save(fig, out)
    return {"panels": ["performance profile"], "methods": list(groups), "curves": len(groups),
            "metric": f"profile of {SCORES[score]['name']}",
            "series": {name: [r.run_dir for r in rs] for name, rs in groups.items()},
            "notes": notes}
