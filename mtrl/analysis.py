"""Multi-seed reports: which runs may be compared, and their aggregate scores with 95% CIs.

**Groups.** Runs are grouped by what defines their method: the resolved configs
(``config.yaml``, read through :class:`mtrl.rundir.RunDir`) compared field by field, leaving out
the fields in :data:`NON_METHOD_FIELDS` (seed, run directory, device, the budget
``total_steps``, logging / evaluation / checkpoint cadence, progress bar) and fields the run's
agent or env does not use. Runs with identical remaining fields form one group, labelled with
its preset name plus the fields in which it differs from the other groups (e.g.
``toy-mtsac agent.actor_arch=multihead``; a field a group keeps at its preset's value is left
out). ``--label RUN=NAME`` (runs sharing a name form a group) and ``--group-by FIELD`` (the
field's value alone) override the automatic grouping.

**Comparability.** Within one group, runs must share the benchmark (env, episode length, task
set), the budget (``total_steps``), the env step of the evaluation being compared and the
evaluation protocol; otherwise the group is refused (:class:`MixedRunsError`, one line naming
the runs and the difference) unless ``allow_mixed``, which reports each value as its own row.

**Scores.** A run's scores are its latest evaluation (``eval/step_*.json``, written by training):
the per-task success rate, or, on benchmarks without a success flag (Atari: the run's
``metadata.json`` says ``has_success: false``), the per-game human-normalized score (HNS).

**Statistics** (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS) are computed with the authors' library ``rliable``: with a score matrix
``[runs, tasks]`` (one run = one seed),

* the interquartile mean (IQM) is the mean of the middle 50% of all ``runs × tasks`` scores —
  the mean after discarding the lowest and the highest 25% (``trim_mean(·, 0.25)``: for ``n``
  scores, ``⌊n/4⌋`` are dropped at each end); the mean, the median of the per-task means and
  the optimality gap (``γ − mean(min(score, γ))``, γ = 1: full success / human level);
* 95% confidence intervals come from the *stratified* percentile bootstrap: each resample draws,
  for every task independently, ``runs`` scores with replacement from that task's runs, and the
  interval is the 2.5th–97.5th percentile of the statistic over resamples;
* the probability of improvement P(X > Y): the probability that a run of X scores higher than a
  run of Y on a task, averaged over tasks (Mann–Whitney U), with its bootstrap CI;
* performance profiles: the fraction of ``runs × tasks`` scores above each threshold τ.

:func:`iqm`, :func:`mean_score` and :func:`stratified_bootstrap_ci` are hand-written versions of
the same definitions, kept as checks of the rliable numbers.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.config import ConfigError


class RunDataError(ValueError):
    """A run lacks, or has garbled, the data a report or plot needs (evaluation results,
    learning curves); the message names the run or file and what is missing."""


class MixedRunsError(RunDataError):
    """Runs of one group differ in budget, benchmark, tasks, evaluation step or evaluation
    protocol; the one-line message names the runs and the difference."""


# --------------------------------------------------------------------------------------------
# Hand-written statistics (checks of the rliable values)


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


# --------------------------------------------------------------------------------------------
# rliable


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except ImportError as e:
        raise RunDataError(f"reports need rliable (`pip install rliable`): {e}") from None
    return library, metrics


def rliable_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rliable")
    except PackageNotFoundError:
        return "?"


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """rliable's bootstrap draws from NumPy's global RNG: seed it for reproducible intervals,
    and give the caller its RNG state back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # degenerate (constant) resamples
            yield
    finally:
        np.random.set_state(state)


#: The aggregate metrics of a report, in rliable's definitions.
AGGREGATES = ("mean", "median", "iqm", "optimality_gap")


def aggregate_metrics(scores: np.ndarray, *, reps: int = 2000, seed: int = 0,
                      level: float = 0.95, gamma: float = 1.0
                      ) -> dict[str, tuple[float, float, float]]:
    """``{metric: (point, ci_low, ci_high)}`` for :data:`AGGREGATES` of a ``[runs, tasks]``
    score matrix: rliable's point estimates and stratified percentile bootstrap CIs."""
    library, metrics = _rliable()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"scores must be [runs, tasks], got shape {s.shape}")

    def aggregates(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_median(x),
                         metrics.aggregate_iqm(x), metrics.aggregate_optimality_gap(x, gamma)])

    with _seeded_numpy(seed):
        point, ci = library.get_interval_estimates({"x": s}, aggregates, reps=reps,
                                                   confidence_interval_size=level)
    return {name: (float(point["x"][k]), float(ci["x"][0, k]), float(ci["x"][1, k]))
            for k, name in enumerate(AGGREGATES)}


def probability_of_improvement(x: np.ndarray, y: np.ndarray, *, reps: int = 2000,
                               seed: int = 0, level: float = 0.95
                               ) -> tuple[float, float, float]:
    """P(X > Y) over ``[runs, tasks]`` matrices of the same tasks (rliable), and its CI from
    the stratified bootstrap of both sets of runs: ``(point, low, high)``."""
    library, metrics = _rliable()
    with _seeded_numpy(seed):
        point, ci = library.get_interval_estimates(
            {"xy": [np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)]},
            metrics.probability_of_improvement, reps=reps, confidence_interval_size=level)
    return float(point["xy"]), float(np.ravel(ci["xy"])[0]), float(np.ravel(ci["xy"])[1])


def performance_profiles(score_dict: Mapping[str, np.ndarray], taus: np.ndarray, *,
                         reps: int = 2000, seed: int = 0
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's score distributions: for each group, the fraction of its ``runs × tasks``
    scores above each ``tau``, and ``[2, len(taus)]`` 95% bootstrap bands."""
    library, _ = _rliable()
    with _seeded_numpy(seed):
        profiles, cis = library.create_performance_profile(
            {k: np.asarray(v, dtype=np.float64) for k, v in score_dict.items()}, taus,
            reps=reps)
    return ({k: np.asarray(v) for k, v in profiles.items()},
            {k: np.asarray(v) for k, v in cis.items()})


# --------------------------------------------------------------------------------------------
# Grouping runs by what defines their method

#: Config fields that do not define a method: they are ignored when runs are grouped. The
#: budget (``total_steps``) is checked separately (runs of different budgets are never merged).
NON_METHOD_FIELDS: tuple[str, ...] = (
    "preset",  # informational; the label shows it
    "seed",
    "run_dir",
    "device",
    "total_steps",
    "log.every",
    "log.progress_bar",
    "checkpoint.every",
    "checkpoint.keep_last",
    "replay.save_with_checkpoint",
    "eval.every",
    "eval.final",
    "agent.combiner.diagnostics_every",  # logging cadence of gradient diagnostics
    "env.num_threads",  # emulator threads: speed only
    "env.vector_strategy",  # sync | async: speed only
)


def _plain(value: Any) -> Any:
    """A config value as plain, comparable JSON-able data (lists of lists, not tuples)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def method_fields(cfg: Any, paths: Sequence[str] | None = None) -> dict[str, Any]:
    """The flattened config fields that define a run's method: every field except
    :data:`NON_METHOD_FIELDS` and those its agent or env does not use."""
    from mtrl import config as C

    out = {}
    for path in C.field_paths() if paths is None else paths:
        if path in NON_METHOD_FIELDS:
            continue
        try:
            if C.unused_field_message(cfg, path) is not None:
                continue
        except ConfigError:  # an agent or env this installation does not know: compare it
            pass
        out[path] = _plain(C.get_path(cfg, path))
    return out


def format_value(value: Any) -> str:
    """A config value, compactly: ``[16,16]``, ``0.0003``, ``true``, ``none``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _preset_defaults(name: str, paths: Sequence[str]) -> dict[str, Any] | None:
    from mtrl.presets import get_preset

    try:
        return method_fields(get_preset(name), paths)
    except ConfigError:
        return None


def automatic_labels(configs: Sequence[Any]) -> list[str]:
    """One label per config: configs with the same :func:`method_fields` share it. A label is
    the group's preset name plus ``field=value`` for each field in which the groups differ —
    left out where the group keeps its preset's value and no other group of that preset
    differs in it."""
    from mtrl import config as C

    paths = list(C.field_paths())
    keys = [method_fields(c, paths) for c in configs]
    sigs: list[str] = []
    members: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        sig = _key(k)
        if sig not in members:
            sigs.append(sig)
        members.setdefault(sig, []).append(i)
    gkeys = [keys[members[s][0]] for s in sigs]
    presets = []
    for s in sigs:
        names: list[str] = []
        for i in members[s]:
            n = configs[i].preset or configs[i].env.name
            if n not in names:
                names.append(n)
        presets.append("+".join(names))
    missing = object()
    varying = [p for p in paths
               if len({_key(k.get(p, "<unused>")) for k in gkeys}) > 1]
    labels = []
    for g, key in enumerate(gkeys):
        peers = [h for h in range(len(gkeys)) if presets[h] == presets[g]]
        defaults = _preset_defaults(presets[g], paths) if "+" not in presets[g] else None
        shown = []
        for p in varying:
            among_peers = len(peers) > 1 and \
                len({_key(gkeys[h].get(p, "<unused>")) for h in peers}) > 1
            own = key.get(p, missing)
            off_default = defaults is None or own is missing or \
                _key(defaults.get(p, "<unused>")) != _key(own)
            if among_peers or (off_default and own is not missing):
                shown.append(p)
        parts = [f"{p}={format_value(key[p]) if p in key else 'unused'}" for p in shown]
        labels.append(" ".join([presets[g], *parts]))
    seen: dict[str, int] = {}
    for g, lab in enumerate(labels):  # (only if fields differ by being unused, never else)
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[g] = f"{lab} #{seen[lab]}"
    return [labels[sigs.index(_key(keys[i]))] for i in range(len(configs))]


def _same_dir(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def parse_labels(specs: Sequence[str], run_dirs: Sequence[str | Path]) -> dict[int, str]:
    """``--label RUN=NAME`` options as ``{index of the run in run_dirs: NAME}``; ConfigError
    for a RUN that is not one of the runs, an empty NAME or a run labelled twice."""
    out: dict[int, str] = {}
    for spec in specs:
        match = None
        for pos in [i for i, ch in enumerate(spec) if ch == "="]:
            run, name = spec[:pos], spec[pos + 1:]
            hits = [i for i, d in enumerate(run_dirs) if run.strip() and _same_dir(run, d)]
            if hits:
                match = (hits, name.strip())
                break
        if match is None:
            if "=" not in spec:
                raise ConfigError(f"--label {spec!r} must be RUN=NAME (RUN: one of the run "
                                  "directories given)")
            raise ConfigError(f"--label {spec!r}: {spec.split('=', 1)[0]!r} is not one of the "
                              "run directories given")
        hits, name = match
        if not name:
            raise ConfigError(f"--label {spec!r} gives no name")
        for i in hits:
            if i in out and out[i] != name:
                raise ConfigError(f"--label: run {run_dirs[i]} is labelled twice ({out[i]!r} "
                                  f"and {name!r})")
            out[i] = name
    return out


def group_labels(run_dirs: Sequence[str | Path], configs: Sequence[Any], *,
                 labels: Sequence[str] = (), group_by: str | None = None
                 ) -> tuple[list[str], list[str]]:
    """The group label of every run, and notes (one line each) about groups formed by
    ``--label`` / ``--group-by`` whose runs' configs differ in method fields.

    ``labels``: ``RUN=NAME`` specs (runs sharing a name form a group); the other runs are
    grouped by ``group_by`` (a dotted config field: its value alone) or automatically
    (:func:`automatic_labels`). ConfigError for an unknown field, an unknown run, a run given
    twice, or an automatic label that equals a ``--label`` name."""
    from mtrl import config as C

    for i, d in enumerate(run_dirs):
        for j in range(i):
            if _same_dir(d, run_dirs[j]):
                spelled = "" if str(d) == str(run_dirs[j]) else f" (as {run_dirs[j]} and {d})"
                raise ConfigError(f"run {d} is given twice{spelled}; each run may count once")
    named = parse_labels(labels, run_dirs)
    rest = [i for i in range(len(run_dirs)) if i not in named]
    out = [""] * len(run_dirs)
    for i, name in named.items():
        out[i] = name
    how: dict[str, str] = {name: "--label" for name in named.values()}
    if group_by is not None:
        if not group_by.strip():
            raise ConfigError("--group-by is empty; name a config field, e.g. agent.actor_arch")
        path = C.resolve_path(group_by.strip(), configs[0] if configs else None)
        if path not in C.field_paths():
            raise ConfigError(f"--group-by {group_by!r} is a config section, not a field")
        for i in rest:
            out[i] = f"{path}={format_value(C.get_path(configs[i], path))}"
            how[out[i]] = f"--group-by {path}"
    elif rest:
        auto = automatic_labels([configs[i] for i in rest])
        for i, lab in zip(rest, auto, strict=True):
            if lab in named.values():
                raise ConfigError(f"the automatic label {lab!r} of run {run_dirs[i]} is also "
                                  "a --label name; label that run too, or choose another name")
            out[i] = lab
    notes = []
    paths = list(C.field_paths())
    for lab, why in how.items():
        idx = [i for i in range(len(run_dirs)) if out[i] == lab]
        keys = [method_fields(configs[i], paths) for i in idx]
        differ = [p for p in paths if len({_key(k.get(p, "<unused>")) for k in keys}) > 1]
        if differ:
            shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more"
                                             if len(differ) > 6 else "")
            notes.append(f"note: group {lab!r} ({why}) holds runs whose configs differ in "
                         f"{shown}")
    return out, notes


# --------------------------------------------------------------------------------------------
# Refusing mixed groups


@dataclass(frozen=True)
class Fact:
    """One comparability property of a run: ``key`` decides equality, ``text`` describes it in
    an error, ``short`` in the label of a row of its own (``--allow-mixed``)."""

    key: str
    text: str
    short: str


#: How an error says that a group mixes values of a property, and what one value is called.
_MIXES = {
    "benchmark": ("mixes benchmarks", "benchmark"),
    "tasks": ("mixes runs evaluated on different tasks", "task set"),
    "budget": ("mixes budgets", "budget"),
    "evaluation step": ("mixes runs evaluated at different env steps", "evaluation step"),
    "last step": ("mixes runs whose curves end at different env steps", "end step"),
    "protocol": ("mixes evaluation protocols", "protocol"),
}


def _runs_text(dirs: Sequence[str]) -> str:
    return ", ".join(dirs)


def split_mixed(items: Sequence[tuple[str, str, Mapping[str, Fact]]], *, allow_mixed: bool,
                unit: str = "row") -> tuple[list[str], dict[str, tuple[str, list[str]]]]:
    """Check each group for runs that must not be merged. ``items``: ``(run, label, facts)``
    per run (facts in checking order). Without ``allow_mixed``, the first mixed property of a
    group raises :class:`MixedRunsError`; with it, the group is split by the differing
    properties (those a split by an earlier one does not already settle) and each part gets
    the label ``"<label> [<short>, ...]"``. Returns the final label of every run and
    ``{new label: (old label, properties split by)}``."""
    out = [label for _, label, _ in items]
    splits: dict[str, tuple[str, list[str]]] = {}
    groups: dict[str, list[int]] = {}
    for i, (_, label, _) in enumerate(items):
        groups.setdefault(label, []).append(i)
    for label, idx in groups.items():
        props = list(items[idx[0]][2])
        differing = [p for p in props if len({items[i][2][p].key for i in idx}) > 1]
        if not differing:
            continue
        if not allow_mixed:
            p = differing[0]
            mixes, one = _MIXES.get(p, (f"mixes {p}s", p))
            by_value: dict[str, list[int]] = {}
            for i in idx:
                by_value.setdefault(items[i][2][p].key, []).append(i)
            parts = "; ".join(f"{_runs_text([items[i][0] for i in js])}: "
                              f"{items[js[0]][2][p].text}" for js in by_value.values())
            raise MixedRunsError(
                f"group {label!r} {mixes}: {parts}; give them different names with --label "
                f"RUN=NAME, or pass --allow-mixed to show each {one} as its own {unit}")
        chosen: list[str] = []
        for p in differing:
            parts_by: dict[tuple[str, ...], set[str]] = {}
            for i in idx:
                sub = tuple(items[i][2][q].key for q in chosen)
                parts_by.setdefault(sub, set()).add(items[i][2][p].key)
            if chosen and all(len(v) == 1 for v in parts_by.values()):
                continue
            chosen.append(p)
        for i in idx:
            new = f"{label} [{', '.join(items[i][2][p].short for p in chosen)}]"
            out[i] = new
            splits[new] = (label, chosen)
    taken = [lab for lab in groups if lab not in {old for old, _ in splits.values()}]
    for new in splits:
        if new in taken:
            raise MixedRunsError(f"splitting mixed groups gives the label {new!r}, which "
                                 "another group already has; rename it with --label")
    return out, splits


# --------------------------------------------------------------------------------------------
# Runs and their scores


#: Benchmark metadata that must agree for scores to be comparable (besides the task set).
BENCHMARK_KEYS = ("name", "episode_length", "reward_function_version", "metaworld_version",
                  "goals_per_task", "has_success", "sticky_actions", "noop_max", "frame_skip",
                  "max_episode_frames", "full_action_space")

#: What a report scores: the column name of its aggregate table and how a task is called.
SCORES = {
    "success": {"name": "success rate", "short": "success", "task": "task",
                "field": "success"},
    "hns": {"name": "human-normalized score", "short": "HNS", "task": "game",
            "field": "human_normalized_score"},
}


@dataclass
class RunScores:
    run_dir: str
    method: str
    seed: int
    step: int
    tasks: dict[str, float]
    episodes_per_task: int
    meta: dict[str, Any]
    score: str = "success"
    """``success`` (per-task success rate) or ``hns`` (per-game human-normalized score)."""
    total_steps: int = 0
    """The run's budget (``total_steps`` of its config; 0: unknown)."""
    protocol: str = ""
    """The evaluation protocol as the run recorded it."""
    benchmark: dict[str, Any] = field(default_factory=dict)
    """The entries of :data:`BENCHMARK_KEYS` of its ``metadata.json`` (and the env name)."""
    config: Any = None
    """The run's resolved config (:class:`mtrl.config.TrainConfig`)."""


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


def _eval_scores(ev: dict[str, Any], source: str, score_field: str = "success"
                 ) -> tuple[int, int, dict[str, float]]:
    """``(step, episodes_per_task, {task: score})`` of an evaluation JSON (``score_field``:
    ``success`` or ``human_normalized_score``); RunDataError naming ``source`` and the missing
    or wrong entry. Games without reference scores (HNS NaN) are left out."""
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
        value = row.get(score_field) if isinstance(row, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                score_field == "success" and not np.isfinite(value)):
            raise RunDataError(f"{source}: task {task!r} has no numeric {score_field!r} "
                               f"(got {value!r})")
        if np.isfinite(value):
            scores[str(task)] = float(value)
    if not scores:
        raise RunDataError(f"{source}: no game has a finite {score_field!r} (games without "
                           "reference scores have none)")
    return step, episodes, scores


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_run(run_dir: str | Path, method: str | None = None) -> RunScores:
    """Scores and comparability facts of one run directory."""
    from mtrl.rundir import RunDir

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    cfg = rd.config()
    ev = latest_eval(run_dir)
    metadata = rd.metadata()
    bench = metadata.get("benchmark", {})
    if not isinstance(bench, dict):
        raise RunDataError(f"{rd.metadata_path}: 'benchmark' must be a JSON "
                           f"object, got {type(bench).__name__}")
    has_success = bench.get("has_success")
    if not isinstance(has_success, bool):  # older runs: Atari evaluations carry HNS
        has_success = "hns_median" not in ev
    score = "success" if has_success else "hns"
    step, episodes, scores = _eval_scores(ev, str(latest_eval_path(run_dir)),
                                          SCORES[score]["field"])
    protocol = ev.get("protocol") or metadata.get("evaluation_protocol") or ""
    num_tasks = len(scores)
    benchmark = {"env": cfg.env.name, **{k: bench.get(k) for k in BENCHMARK_KEYS}}
    benchmark["has_success"] = has_success
    if benchmark["episode_length"] is None and cfg.env.name.startswith("toy"):
        benchmark["episode_length"] = cfg.env.max_episode_steps
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
            "total_steps": cfg.total_steps,
        },
        score=score,
        total_steps=cfg.total_steps,
        protocol=_one_line(protocol),
        benchmark=benchmark,
        config=cfg,
    )


def load_runs(run_dirs: Sequence[str | Path], *, labels: Sequence[str] = (),
              group_by: str | None = None) -> tuple[list[RunScores], list[str]]:
    """:func:`load_run` for each run, with its group label as ``method``
    (:func:`group_labels`); also the notes of the grouping."""
    runs = [load_run(d) for d in run_dirs]
    names, notes = group_labels(run_dirs, [r.config for r in runs], labels=labels,
                                group_by=group_by)
    for r, name in zip(runs, names, strict=True):
        r.method = name
    return runs, notes


def _tasks_text(tasks: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(tasks[:limit])
    return shown + (f", ... ({len(tasks)} tasks)" if len(tasks) > limit else "")


def benchmark_fact(bench: Mapping[str, Any]) -> Fact:
    """The benchmark of a run (env, episode length, versions) as a :class:`Fact`."""
    parts = [f"{k}={format_value(v)}" for k, v in bench.items()
             if v is not None and k not in ("env", "name")]
    name = str(bench.get("name") or bench.get("env"))
    if bench.get("env") and bench.get("env") != name:
        name = f"{bench['env']} ({name})"
    short = name + (f" L={bench['episode_length']}" if bench.get("episode_length") else "")
    return Fact(_key(dict(bench)), f"benchmark {name}" + (f" ({', '.join(parts)})"
                                                          if parts else ""), short)


def tasks_fact(tasks: Sequence[str]) -> Fact:
    return Fact(_key(sorted(tasks)), f"tasks {_tasks_text(list(tasks))}",
                f"tasks {_tasks_text(list(tasks), 3)}")


def budget_fact(total_steps: int, num_tasks: int) -> Fact:
    per = total_steps // max(num_tasks, 1)
    return Fact(str(total_steps), f"total_steps={total_steps} ({per} env steps per task)",
                f"{per} steps/task")


def protocol_fact(protocol: str, episodes: int | None) -> Fact:
    first = protocol.split(";")[0].strip() or "not recorded"
    text = protocol if len(protocol) <= 100 else protocol[:97] + "..."
    eps = f"{episodes} episodes per task, " if episodes is not None else ""
    return Fact(_key([protocol, episodes]), f"{eps}protocol {text or 'not recorded'!r}",
                f"{episodes} eps/task, {first}" if episodes is not None else first)


def _report_facts(r: RunScores) -> dict[str, Fact]:
    return {
        "benchmark": benchmark_fact(r.benchmark or {"name": r.meta.get("benchmark")}),
        "tasks": tasks_fact(list(r.tasks)),
        "budget": budget_fact(r.total_steps or r.step, len(r.tasks)),
        "evaluation step": Fact(str(r.step), f"latest evaluation at env step {r.step}",
                                f"eval at step {r.step}"),
        "protocol": protocol_fact(r.protocol, r.episodes_per_task),
    }


def group_runs(runs: Sequence[RunScores], *, allow_mixed: bool = False, unit: str = "row"
               ) -> tuple[dict[str, list[RunScores]], dict[str, tuple[str, list[str]]]]:
    """Runs by group (their ``method``), each group checked by :func:`split_mixed`; runs of
    different score kinds (success rate, HNS) are refused. Returns the groups and the splits."""
    labels, splits = split_mixed([(r.run_dir, r.method, _report_facts(r)) for r in runs],
                                 allow_mixed=allow_mixed, unit=unit)
    groups: dict[str, list[RunScores]] = {}
    for r, label in zip(runs, labels, strict=True):
        groups.setdefault(label, []).append(r)
    kinds: dict[str, list[str]] = {}
    for r in runs:
        kinds.setdefault(r.score, []).append(r.run_dir)
    if len(kinds) > 1:
        parts = "; ".join(f"{_runs_text(ds)}: {SCORES[k]['name']}" for k, ds in kinds.items())
        raise MixedRunsError(f"the runs are scored differently ({parts}): a benchmark with a "
                             "success flag and one without; report them separately")
    return groups, splits


def _statistics_text(reps: int, score: str) -> str:
    gamma = "γ=1: full success" if score == "success" else "γ=1: human level"
    return (f"rliable {rliable_version()} (Agarwal et al. 2021): mean; median of per-task "
            "means; IQM = mean of the middle 50% of run×task scores; optimality gap = "
            f"γ − mean(min(score, γ)) ({gamma}); 95% CI = stratified percentile bootstrap over "
            f"runs ({reps} resamples)")


def _protocol_text(protocol: str, score: str, step: int) -> str:
    what = ("per-task success rate" if score == "success"
            else "per-game human-normalized score")
    base = protocol or "not recorded by the run"
    return f"{base}; scores = {what} of each run's latest evaluation (env step {step})"


def _match_label(name: str, labels: Sequence[str]) -> str:
    """A ``--compare`` name: a label itself, or the one label it is a word or part of."""
    if name in labels:
        return name
    for hits in ([lab for lab in labels if name in lab.split()],
                 [lab for lab in labels if name in lab]):
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ConfigError(f"--compare {name!r} matches several groups: "
                              + "; ".join(repr(h) for h in hits))
    raise ConfigError(f"--compare {name!r} is not a group of this report; groups: "
                      + "; ".join(repr(lab) for lab in labels))


def build_report(runs: Sequence[RunScores], *, reps: int = 2000, seed: int = 0,
                 allow_mixed: bool = False, compare: Sequence[tuple[str, str]] = ()
                 ) -> dict[str, Any]:
    """Group runs by method, check each group (:func:`group_runs`) and aggregate across seeds
    with rliable (see the module docstring). ``compare``: pairs of groups ``(X, Y)`` whose
    probability of improvement P(X > Y) is reported."""
    groups, splits = group_runs(runs, allow_mixed=allow_mixed)
    score = runs[0].score if runs else "success"
    out: dict[str, Any] = {"protocol": "", "statistics": _statistics_text(reps, score),
                           "methods": {}}
    matrices: dict[str, tuple[list[str], np.ndarray]] = {}
    for name, rs in groups.items():
        task_names = list(rs[0].tasks)
        scores = np.array([[r.tasks[t] for t in task_names] for r in rs])
        matrices[name] = (task_names, scores)
        agg = aggregate_metrics(scores, reps=reps, seed=seed)
        metas = {json.dumps(r.meta, sort_keys=True) for r in rs}
        entry: dict[str, Any] = {
            "runs": [r.run_dir for r in rs],
            "seeds": [r.seed for r in rs],
            "num_runs": len(rs),
            "score": SCORES[rs[0].score]["name"],
        }
        if rs[0].score == "success":
            entry["success_mean"] = agg["mean"][0]
            entry["success_mean_ci95"] = list(agg["mean"][1:])
        for k in AGGREGATES:
            entry[k] = agg[k][0]
            entry[f"{k}_ci95"] = list(agg[k][1:])
        entry.update({
            "per_run_mean": [float(x) for x in scores.mean(1)],
            "tasks": {t: {"mean": float(scores[:, i].mean()), "std": float(scores[:, i].std()),
                          "per_run": [float(x) for x in scores[:, i]]}
                      for i, t in enumerate(task_names)},
            "metadata": rs[0].meta if len(metas) == 1 else [r.meta for r in rs],
            "protocol": _protocol_text(rs[0].protocol, rs[0].score, rs[0].step),
        })
        if name in splits:
            entry["split_from"], entry["split_by"] = splits[name][0], splits[name][1]
        out["methods"][name] = entry
    protocols = {m["protocol"] for m in out["methods"].values()}
    out["protocol"] = protocols.pop() if len(protocols) == 1 else \
        "differs between methods; see each method's 'protocol'"
    if compare:
        labels = list(groups)
        rows = []
        for a, b in compare:
            x, y = _match_label(a, labels), _match_label(b, labels)
            if x == y:
                raise ConfigError(f"--compare {a!r} {b!r} names the same group {x!r} twice")
            tx, sx = matrices[x]
            ty, sy = matrices[y]
            if sorted(tx) != sorted(ty):
                raise MixedRunsError(f"--compare {x!r} {y!r}: the groups were evaluated on "
                                     f"different tasks ({_tasks_text(tx)} vs {_tasks_text(ty)})")
            sy = sy[:, [ty.index(t) for t in tx]]
            p, lo, hi = probability_of_improvement(sx, sy, reps=reps, seed=seed)
            rows.append({"x": x, "y": y, "probability_of_improvement": p, "ci95": [lo, hi]})
        out["comparisons"] = rows
    return out


def _cell(m: Mapping[str, Any], key: str) -> str:
    lo, hi = m[f"{key}_ci95"]
    return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a method table (aggregates with CIs), a per-task table, the
    comparisons, the runs of each method, the protocol and the statistics."""
    methods = report["methods"]
    hns = any(m.get("score") == SCORES["hns"]["name"] for m in methods.values())
    unit = "game" if hns else "task"
    if hns:
        lines = ["| method | runs | median HNS [95% CI] | mean HNS [95% CI] | IQM HNS [95% CI] "
                 "| optimality gap [95% CI] | env steps / game |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        order = ("median", "mean", "iqm", "optimality_gap")
    else:
        lines = ["| method | runs | success mean [95% CI] | median [95% CI] | IQM [95% CI] "
                 "| optimality gap [95% CI] | env steps / task |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        order = ("mean", "median", "iqm", "optimality_gap")
    for name, m in methods.items():
        meta = m["metadata"] if isinstance(m["metadata"], dict) else m["metadata"][0]
        row = " | ".join(_cell(m, k) for k in order)
        lines.append(f"| {name} | {m['num_runs']} | {row} | {meta['steps_per_task']} |")
    names = list(methods)
    tasks: list[str] = []
    for m in methods.values():
        tasks += [t for t in m["tasks"] if t not in tasks]
    lines += ["", f"| {unit}{' (HNS)' if hns else ''} | " + " | ".join(names) + " |",
              "| --- |" + " --- |" * len(names)]
    for t in tasks:
        cells = []
        for n in names:
            cell = methods[n]["tasks"].get(t)
            cells.append("" if cell is None else f"{cell['mean']:.2f} ± {cell['std']:.2f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    if report.get("comparisons"):
        lines += ["", "| comparison | P(X > Y) [95% CI] |", "| --- | --- |"]
        for c in report["comparisons"]:
            lo, hi = c["ci95"]
            lines.append(f"| {c['x']} > {c['y']} | {c['probability_of_improvement']:.3f} "
                         f"[{lo:.3f}, {hi:.3f}] |")
    lines += ["", "Runs:"]
    for n, m in methods.items():
        lines.append(f"- {n}: " + ", ".join(f"{d} (seed {s})"
                                            for d, s in zip(m["runs"], m["seeds"], strict=True)))
    lines.append("")
    if len({m["protocol"] for m in methods.values()}) <= 1:
        lines.append(f"Protocol: {report['protocol']}.")
    else:
        lines += [f"Protocol of {n}: {m['protocol']}." for n, m in methods.items()]
    stats = report["statistics"]
    if report.get("comparisons"):
        stats += ("; P(X > Y) = probability that a run of X scores higher than a run of Y on a "
                  f"{unit}, averaged over {unit}s (Mann-Whitney U), with its stratified "
                  "bootstrap CI")
    lines.append(f"Statistics: {stats}.")
    return "\n".join(lines) + "\n"


def split_notes(report: Mapping[str, Any]) -> list[str]:
    """One note per group that ``--allow-mixed`` split into rows."""
    parts: dict[str, list[str]] = {}
    by: dict[str, list[str]] = {}
    for name, m in report["methods"].items():
        if "split_from" in m:
            parts.setdefault(m["split_from"], []).append(name)
            by[m["split_from"]] = m["split_by"]
    return [f"note: the runs of group {old!r} differ in {' and '.join(by[old])}; shown as "
            f"{len(new)} separate rows: " + "; ".join(repr(n) for n in new)
            for old, new in parts.items()]
