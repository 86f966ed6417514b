"""Learning curves from TensorBoard event files: ``mtrl plot RUN_DIR ... --out FILE.png``.

One panel per task plus a panel for the mean over tasks; x = env steps, y = success rate (or
return). Runs are grouped by method (their preset name); a method with several runs (seeds) is
drawn as the mean curve with a shaded band of ± one standard error, a single run as its curve.
Curves of different runs are aligned on the union of their logged steps (linear interpolation
inside each run's range).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtrl.analysis import RunDataError

METRICS = {
    "eval-success": ("eval/success", "eval success rate"),
    "train-success": ("train/success", "train success rate"),
    "eval-return": ("eval/return", "eval return"),
    "train-return": ("train/episode_return", "train episode return"),
}

#: Why a run can lack a metric's curves.
_MISSING = {
    "eval": "it has not been evaluated during training yet (eval.every=0 evaluates only at "
            "the end, and eval.final=false never)",
    "train": "no training episode has finished yet",
}


def missing_curves_message(run_dir: str | Path, metric: str) -> str:
    """One line: run ``run_dir`` has no curves of ``metric``, and why that happens."""
    prefix, _ = METRICS[metric]
    why = _MISSING[metric.split("-")[0]]
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


def _align(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Runs' curves on common steps: the steps every run covers, ``[runs, steps]`` values."""
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    steps = np.unique(np.concatenate([c[0] for c in curves]))
    steps = steps[(steps >= lo) & (steps <= hi)]
    if steps.size == 0:
        steps = curves[0][0]
    return steps, np.stack([np.interp(steps, s, v) for s, v in curves])


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    metric: str = "eval-success",
    methods: Sequence[str] | None = None,
    title: str | None = None,
) -> dict[str, object]:
    """Draw the curves of ``run_dirs`` into ``out`` (PNG). Returns what was drawn: panel titles,
    methods and the number of curves, for callers and tests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtrl.rundir import RunDir

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    prefix, ylabel = METRICS[metric]
    groups: dict[str, list[dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
    for i, rd in enumerate(run_dirs):
        name = methods[i] if methods else (RunDir(rd).config().preset or Path(rd).name)
        data = {task: curve for task, curve in read_scalars(rd, prefix).items()
                if curve[0].size and task != "mean"}
        if not data:
            raise RunDataError(missing_curves_message(rd, metric))
        groups.setdefault(name, []).append(data)
    tasks: list[str] = []
    for runs in groups.values():
        for data in runs:
            tasks += [t for t in data if t not in tasks and t != "mean"]
    panels = ["mean over tasks", *tasks]
    cols = min(5, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False,
                             sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_curves = 0
    for p, panel in enumerate(panels):
        ax = axes[p // cols][p % cols]
        for g, (name, runs) in enumerate(groups.items()):
            if panel == "mean over tasks":
                curves = []
                for data in runs:
                    steps, vals = _align([data[t] for t in data if t in tasks])
                    curves.append((steps, vals.mean(0)))
            else:
                curves = [data[panel] for data in runs if panel in data]
            if not curves:
                continue
            steps, vals = _align(curves)
            mean = vals.mean(0)
            color = colors[g % len(colors)]
            label = f"{name} ({len(curves)} run{'s' if len(curves) > 1 else ''})"
            ax.plot(steps, mean, color=color, label=label if p == 0 else None)
            n_curves += 1
            if len(curves) > 1:
                se = vals.std(0, ddof=1) / np.sqrt(len(curves))
                ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        ax.set_title(panel, fontsize=9)
        if "success" in metric:
            ax.set_ylim(-0.03, 1.03)
        if p // cols == rows - 1 or p + cols >= len(panels):
            ax.set_xlabel("env steps")
        if p % cols == 0:
            ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for q in range(len(panels), rows * cols):
        axes[q // cols][q % cols].axis("off")
    fig.legend(loc="lower center", ncol=max(1, len(groups)), fontsize=9,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title or f"{ylabel} per task (mean ± s.e. over runs)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return {"panels": panels, "methods": list(groups), "curves": n_curves}
