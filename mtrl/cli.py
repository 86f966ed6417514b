"""``mtrl train | eval | presets`` — thin: parse, validate, call the library.

Any config field can be overridden after the preset: ``--agent.batch-size 640``,
``--env.tasks reach-v3,push-v3``, ``--eval.every=0``. ``mtrl presets NAME`` prints every field of
a preset with its value.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path

from mtrl import config as C
from mtrl.config import ConfigError
from mtrl.plugins import prepare_cli as prepare_plugins

EXIT_USAGE = 2


class CLIError(Exception):
    pass


class UsageError(CLIError):
    """A command line argparse cannot parse (``prog``: the (sub)command it was parsing)."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.message, self.prog = message, prog

    def __str__(self) -> str:
        return f"{self.message} (see `{self.prog} --help`)"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``mtrl: error: ...``, exit status 2)
    instead of a usage block: they raise :class:`UsageError`, which :func:`main` prints."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(" ".join(message.split()), self.prog)


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import this plug-in first: a module importable from sys.path or "
                        "a .py file, registering extra envs, architectures, combiners or "
                        "agents (repeatable; a run records its plug-ins, see README "
                        "'Extending mtrl')")


def _build_parser() -> argparse.ArgumentParser:
    from mtrl.presets import PRESETS

    parser = _Parser(
        prog="mtrl", description="Multi-task reinforcement learning: train, evaluate, presets."
    )
    from mtrl import __version__

    parser.add_argument("--version", action="version", version=f"mtrl {__version__}")
    sub = parser.add_subparsers(dest="command",
                                metavar="{train,distill,eval,plot,report,presets}")

    t = sub.add_parser(
        "train",
        help="train a preset (or resume a run)",
        description="Train PRESET into a run directory. Any config field can be overridden: "
        "--agent.batch-size 640, --env.tasks reach-v3,push-v3 (see `mtrl presets PRESET`).",
    )
    t.add_argument("preset", nargs="?", help=f"one of: {', '.join(PRESETS)}")
    t.add_argument("--seed", type=int, help="controls envs, goals, networks and evaluation")
    t.add_argument("--total-steps", type=int, help="env steps summed over all envs")
    t.add_argument("--run-dir", help="output directory (default runs/<preset>-s<seed>-<time>)")
    t.add_argument("--device", help="auto | cpu | cuda")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--checkpoint", help="with --resume: resume from this checkpoint file")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--seeds", help="seeds, e.g. 0,1,2 or 0-9: one run per seed as "
                   "parallel processes (at most --jobs at once) into RUN_DIR/seed<k>")
    t.add_argument("--jobs", type=int, help="with --seeds: parallel runs (default: CPU cores, "
                   "at most the number of seeds)")
    t.add_argument("--sweep", action="append", nargs="+", metavar="FIELD=V1,V2,...",
                   help="train every combination of these values (x every seed of --seeds, "
                   "default the preset's) into RUN_DIR/<field=value,...>/seed<k>; e.g. "
                   "--sweep agent.sac.actor-lr=1e-4,3e-4 agent.batch-size=640,1280")
    t.add_argument("--launcher", choices=["local", "ray"], default="local",
                   help="with --seeds/--sweep: local processes (default), or one Ray task per "
                   "run on the cluster of --ray-address (default: a local Ray); run "
                   "directories must then be on a path every node shares")
    t.add_argument("--resources-per-run", metavar="cpu=N,gpu=F",
                   help="with --launcher ray: what each run reserves (default cpu=1)")
    t.add_argument("--retries", type=int, default=0,
                   help="with --seeds/--sweep: resume a failed run from its last checkpoint up "
                   "to this many times")
    _add_plugin_option(t)

    d = sub.add_parser(
        "distill",
        help="distil per-task teachers (SB3 .zip files or mtrl runs) into one student",
        description="Policy distillation into a multi-task student. PRESET gives the env and "
        "the student (toy-distill, or any preset: its env and actor architecture). Teachers: "
        "--teacher TASK=PATH per task (a stable-baselines3 .zip or an mtrl run directory), "
        "and/or --teachers PATH for the rest (a directory of <task>.zip files or an mtrl run "
        "trained on these tasks). The result is an ordinary run directory (`mtrl eval`). "
        "Config overrides as for train: --agent.distill.data student, --agent.distill.lr 3e-4, "
        "...",
    )
    d.add_argument("preset", nargs="?", help="toy-distill, or any preset (its env and student)")
    d.add_argument("--teacher", action="append", default=[], metavar="TASK=PATH",
                   help="the teacher of one task (repeat for each task)")
    d.add_argument("--teachers", metavar="PATH",
                   help="teachers of all tasks not given by --teacher")
    for flag, kw in (("--seed", {"type": int}), ("--total-steps", {"type": int}),
                     ("--run-dir", {}), ("--device", {}), ("--resume", {"metavar": "RUN_DIR"}),
                     ("--checkpoint", {})):
        d.add_argument(flag, **kw)  # type: ignore[arg-type]
    d.add_argument("--no-progress", action="store_true")
    _add_plugin_option(d)

    e = sub.add_parser("eval", help="evaluate a saved policy of a run directory")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", help="checkpoint file (default: the run's latest)")
    e.add_argument("--episodes-per-task", type=int, help="default: the run's eval setting")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    e.add_argument("--video", action="store_true",
                   help="also record one episode per task to RUN_DIR/eval/videos/<task>.mp4")
    e.add_argument("--video-every", type=int, default=2, help="draw every N-th step (default 2)")
    e.add_argument("--video-format", choices=("mp4", "gif"), default="mp4",
                   help="mp4 (H.264, default) or gif (larger files)")
    e.add_argument("--video-fps", type=int,
                   help="frames per second (default: 30 for Meta-World, 10 for other envs)")
    e.add_argument("--video-size", type=int,
                   help="frame width in pixels (default: 480 for mp4, 320 for gif)")
    e.add_argument("--video-tasks", metavar="TASKS",
                   help="comma-separated tasks to record (default: all)")
    e.add_argument("--video-jobs", type=int, default=1,
                   help="Meta-World: tasks rendered at once, one process each (default 1)")
    e.add_argument("--no-table", action="store_true",
                   help="with --video: only record the videos, skip the protocol evaluation")
    _add_plugin_option(e)

    grouping = (
        "Runs are grouped by what differs in their resolved configs (config.yaml), ignoring "
        "seed, run_dir, device, the budget total_steps, logging/evaluation/checkpoint cadence "
        "and the progress bar; a group is labelled with its preset plus the fields in which "
        "the groups differ (e.g. 'toy-mtsac agent.actor_arch=multihead'). Runs of one group "
        "with different budgets (total_steps), evaluation steps, benchmarks (env, task set, "
        "episode length) or evaluation protocols are refused, unless --allow-mixed."
    )
    pl = sub.add_parser(
        "plot", help="learning curves (or performance profiles) of runs grouped by config",
        description="Learning curves of runs as PNG: a grid of panels (aggregate over tasks, "
        "then one per task), each group the mean over its runs (seeds) ± one standard error. "
        + grouping + " Curves are never cut to the shortest run: with --allow-mixed each "
        "budget is its own series. Benchmarks without a success flag (Atari) are plotted in "
        "human-normalized score (median, IQM and mean over games, and per game). --profile "
        "draws rliable performance profiles of the latest evaluations instead.")
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--out", required=True, help="PNG file to write")
    pl.add_argument("--metric", default="auto",
                    help="auto (eval-success, or eval-hns without a success flag) | "
                    "eval-success | train-success | eval-return | train-return | eval-hns | "
                    "train-hns")
    pl.add_argument("--title")
    pl.add_argument("--profile", action="store_true",
                    help="draw performance profiles instead of curves: for each group, the "
                    "fraction of runs x tasks whose latest-evaluation score exceeds tau, with "
                    "95%% stratified bootstrap bands (rliable; Agarwal et al. 2021)")

    r = sub.add_parser(
        "report", help="multi-seed report: mean, median, IQM, optimality gap with 95%% CIs",
        description="Aggregate the latest evaluations of runs with rliable (Agarwal et al. "
        "2021): mean, median, IQM and optimality gap over runs x tasks with stratified "
        "bootstrap 95% CIs, per-task tables, and with --compare the probability of "
        "improvement between two groups. " + grouping + " Benchmarks without a success flag "
        "(Atari) are scored in human-normalized score.")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--json", help="write the report as JSON here")
    r.add_argument("--markdown", help="write the report as Markdown here")
    r.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    r.add_argument("--compare", nargs=2, action="append", default=[], metavar=("X", "Y"),
                   help="also report P(X > Y), the probability that a run of group X scores "
                   "higher than a run of group Y on a task (averaged over tasks), with its "
                   "95%% CI; X, Y: group labels (or a word or part of exactly one); "
                   "repeatable")
    for a, unit in ((pl, "series"), (r, "row")):
        a.add_argument("--label", action="append", default=[], metavar="RUN=NAME",
                       help="name the group of run directory RUN (repeatable); runs sharing a "
                       "name form one group, instead of the automatic grouping")
        a.add_argument("--group-by", metavar="FIELD",
                       help="group the (unlabelled) runs by the value of this dotted config "
                       "field alone, e.g. agent.actor_arch")
        a.add_argument("--allow-mixed", action="store_true",
                       help="instead of refusing a group whose runs differ in budget, "
                       "evaluation step, benchmark or evaluation protocol, show each value as "
                       f"its own {unit}")

    p = sub.add_parser("presets", help="list presets, or show one preset's full config")
    p.add_argument("name", nargs="?")
    return parser


_TRAIN_FLAGS_WITH_VALUE = {"--seed", "--total-steps", "--run-dir", "--device", "--resume",
                           "--checkpoint", "--seeds", "--jobs", "--teacher", "--teachers",
                           "--plugin", "--sweep", "--retries", "--launcher",
                           "--resources-per-run"}
_TRAIN_FLAGS = _TRAIN_FLAGS_WITH_VALUE | {"--no-progress", "-h", "--help"}


def split_overrides(tokens: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate config overrides from ``train``'s own arguments.

    ``['toy-mtsac', '--seed', '1', '--agent.sac.actor-lr', '1e-3', '--eval.every=0']`` →
    ``(['toy-mtsac', '--seed', '1'], [('agent.sac.actor-lr', '1e-3'), ('eval.every', '0')])``.
    """
    paths = C.field_paths()
    rest: list[str] = []
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name = tok.split("=", 1)[0]
        if not tok.startswith("--") or name in _TRAIN_FLAGS:
            rest.append(tok)
            if name in _TRAIN_FLAGS_WITH_VALUE and "=" not in tok and i + 1 < len(tokens):
                rest.append(tokens[i + 1])
                i += 1
            i += 1
            continue
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            path = key.replace("-", "_")
            with contextlib.suppress(ConfigError):  # unknown names fail when applied
                path = C.resolve_path(path)
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if paths.get(path) is bool and (nxt is None or nxt.startswith("--")):
                value = "true"
                i += 1
            elif nxt is None:
                C.resolve_path(path)  # an unknown name is reported as such
                raise CLIError(f"{tok} needs a value")
            else:
                value = nxt
                i += 2
        out.append((key, value))
    return rest, out


def _apply_common(
    cfg: C.TrainConfig, args: argparse.Namespace, overrides: list[tuple[str, str]]
) -> None:
    for key, value in overrides:
        C.set_override(cfg, key, value)
    # Refuse overrides that would have no effect (a field of another algorithm or env).
    for key, _ in overrides:
        why = C.unused_field_message(cfg, C.resolve_path(key, cfg))
        if why is not None:
            raise CLIError(f"--{key}: {why}")
    if args.seed is not None:
        cfg.seed = args.seed
    if args.total_steps is not None:
        cfg.total_steps = args.total_steps
    if args.device is not None:
        cfg.device = args.device
    if args.no_progress:
        cfg.log.progress_bar = False


def _shorten_warmup(cfg: C.TrainConfig, overrides: list[tuple[str, str]]) -> None:
    """A short run (``--total-steps`` below the preset's warm-up, e.g. a 20k-step smoke test of
    an MT10 preset whose warm-up is 40k) would never update the agent. Unless the user set the
    warm-up explicitly, use a quarter of the run instead, and say so; config.yaml records it."""
    explicit = any(k.replace("-", "_") == "warmup_steps" for k, _ in overrides)
    if explicit or cfg.warmup_steps < cfg.total_steps:
        return
    new = cfg.total_steps // 4
    print(f"note: warmup_steps={cfg.warmup_steps} >= total_steps={cfg.total_steps}, so the run "
          f"would never update the agent; using warmup_steps={new} (set --warmup-steps to "
          "choose)", file=sys.stderr)
    cfg.warmup_steps = new


def _parse_seeds(text: str) -> list[int]:
    """``0,1,2``, a range ``0-9`` (both ends included) or a mix: ``0-3,7``."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            if dash and lo.strip() and hi.strip():
                a, b = int(lo), int(hi)
                if a > b or b - a >= 100_000:
                    raise ValueError(part)
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds={text!r} must be comma-separated integers or ranges a-b "
                          "(a <= b), e.g. 0,1,2 or 0-9") from None
    if not seeds:
        raise ConfigError(f"--seeds={text!r} lists no seeds; give comma-separated seeds, "
                          "e.g. 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds={text!r} must list distinct non-negative integers")
    for s in seeds:
        try:
            C.check_seed("--seeds", s)
        except ConfigError:
            raise ConfigError(f"--seeds={text!r}: seed {s} is not in [0, {C.MAX_SEED}]") \
                from None
    return seeds


def _check_jobs(args: argparse.Namespace) -> None:
    if getattr(args, "jobs", None) is None:
        return
    if getattr(args, "seeds", None) is None and not getattr(args, "sweep", None):
        raise CLIError("--jobs is only used with --seeds or --sweep (parallel runs)")
    if args.jobs < 1:
        raise ConfigError(f"--jobs={args.jobs} must be >= 1")


def _check_dir_arg(flag: str, value: str | None) -> None:
    """A directory argument (--run-dir): not empty, not an existing file, and no file in the
    way of creating it."""
    if value is None:
        return
    if not value.strip():
        raise CLIError(f"{flag} is empty; name a directory")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{flag} {value} is an existing file, not a directory")
    _check_parents(flag, path)


def _check_file_arg(flag: str, value: str | None) -> None:
    """An input file argument (--checkpoint): not empty, not a directory."""
    if value is None:
        return
    if not value.strip():
        raise CLIError(f"{flag} is empty; name a file")
    if Path(value).is_dir():
        raise CLIError(f"{flag} {value} is a directory; name a file")


def _check_out_arg(flag: str, value: str | None) -> None:
    """An output file argument (--out, --json, --markdown): not empty, not an existing
    directory, and no file in the way of creating its folder."""
    if value is None:
        return
    if not value.strip():
        raise CLIError(f"{flag} is empty; name a file to write")
    path = Path(value)
    if path.is_dir():
        raise CLIError(f"{flag} {value} is an existing directory; name a file")
    _check_parents(flag, path.parent)


def _check_parents(flag: str, path: Path) -> None:
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"{flag} {path}: {parent} is a file, not a directory")
            return


def _parse_sweeps(specs: list[str], overrides: list[tuple[str, str]]
                  ) -> list[tuple[str, list[str]]]:
    """``["agent.sac.actor-lr=1e-4,3e-4", ...]`` → ``[("agent.sac.actor-lr", ["1e-4", "3e-4"])]``
    (field names as on the command line); one-line errors for malformed, repeated or unknown
    fields, and for a field also given as a plain override."""
    out: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    plain = {C.resolve_path(k.replace("-", "_")) for k, _ in overrides}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().removeprefix("--")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise ConfigError(f"--sweep {spec!r}: give FIELD=V1,V2,..., e.g. "
                              "--sweep agent.sac.actor-lr=1e-4,3e-4")
        path = C.resolve_path(key.replace("-", "_"))  # ConfigError with did-you-mean
        if path in seen:
            raise ConfigError(f"--sweep {key}: the field is swept twice")
        if path in plain:
            raise ConfigError(f"--sweep {key}: the field is also set by --{key}; sweep it or "
                              "set it, not both")
        if len(set(vals)) != len(vals):
            raise ConfigError(f"--sweep {spec!r} lists a value twice")
        seen.add(path)
        out.append((key, vals))
    return out


def _run_result(run_dir: Path) -> str:
    """The latest evaluation of a finished run, for the sweep's summary table."""
    files = sorted((run_dir / "eval").glob("step_*.json"))
    if not files:
        return "no evaluation"
    try:
        d = json.loads(files[-1].read_text())
        score = (f"HNS median {d['hns_median']:.3f}" if "hns_median" in d
                 else f"success {d['success_mean']:.3f}, return {d['return_mean']:.1f}")
        return f"step {int(d['step']):,}: {score}"
    except (ValueError, KeyError, TypeError, OSError):
        return f"unreadable {files[-1].name}"


def cmd_train_seeds(argv: list[str], args: argparse.Namespace,
                    overrides: list[tuple[str, str]]) -> int:
    """Run one training process per seed — and per combination of ``--sweep`` values — at most
    ``--jobs`` at a time, each with its share of the CPU threads, into ``RUN_DIR/seed<k>`` (or
    ``RUN_DIR/<field=value,...>/seed<k>``); a failed run with a checkpoint is resumed up to
    ``--retries`` times; a table of every run's latest evaluation ends the sweep."""
    import itertools
    import subprocess
    import time

    from mtrl.presets import get_preset

    if args.resume or args.seed is not None:
        raise CLIError("--seeds/--sweep cannot be combined with --resume or --seed")
    if not args.preset:
        raise CLIError("--seeds/--sweep needs a preset")
    if args.retries < 0:
        raise ConfigError(f"--retries={args.retries} must be >= 0")
    from mtrl.launch import parse_resources

    resources = parse_resources(args.resources_per_run)
    if args.resources_per_run and args.launcher != "ray":
        raise CLIError("--resources-per-run is only used with --launcher ray")
    sweeps = _parse_sweeps([spec for group in args.sweep or [] for spec in group], overrides)
    # Validate everything once, before any process starts.
    cfg = get_preset(args.preset)
    _apply_common(cfg, args, overrides)
    seeds = _parse_seeds(args.seeds) if args.seeds is not None else [cfg.seed]
    _check_jobs(args)
    _check_dir_arg("--run-dir", args.run_dir)
    combos: list[list[tuple[str, str]]] = [
        list(zip([k for k, _ in sweeps], values, strict=True))
        for values in itertools.product(*(v for _, v in sweeps))]
    for combo in combos:
        c = get_preset(args.preset)
        _apply_common(c, args, [*overrides, *combo])
        C.validate(c)
    cores = os.cpu_count() or 1
    n_runs = len(combos) * len(seeds)
    base = Path(args.run_dir) if args.run_dir else \
        Path("runs") / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    launcher: typing.Any
    if args.launcher == "ray":
        from mtrl.launch import RayLauncher

        base = base.resolve()  # the runs may start on other nodes
        launcher = RayLauncher(cfg.collector.address, resources)
        jobs = args.jobs if args.jobs is not None else n_runs  # Ray queues by resources
        threads = max(1, int(resources.get("cpu", 1)))
    else:
        launcher = None
        jobs = args.jobs if args.jobs is not None else min(n_runs, cores)
        threads = max(1, cores // jobs)

    def label(combo: list[tuple[str, str]]) -> str:
        return ",".join(f"{k}={v}" for k, v in combo)

    runs: list[tuple[str, list[tuple[str, str]], int, Path]] = []
    for combo in combos:
        for s in seeds:
            where = base / label(combo) if combo else base
            name = f"{label(combo)} seed {s}" if combo else f"seed {s}"
            runs.append((name, combo, s, where / f"seed{s}"))
    for _name, _combo, _s, run_dir in runs:
        if (run_dir / "config.yaml").exists():
            raise CLIError(f"{run_dir} already holds a run; choose another --run-dir")
    # Strip the launcher's own options from the per-run command line.
    child: list[str] = []
    skip, in_sweep = False, False
    for tok in argv:
        if skip:
            skip = False
            continue
        if in_sweep and not tok.startswith("--"):
            continue  # --sweep takes every value up to the next option
        in_sweep = False
        key = tok.split("=", 1)[0]
        if key == "--sweep":
            in_sweep = True
            continue
        if key in ("--seeds", "--jobs", "--run-dir", "--retries", "--launcher",
                   "--resources-per-run"):
            skip = "=" not in tok
            continue
        child.append(tok)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    pending = list(range(len(runs)))
    running: list[tuple[int, subprocess.Popen[bytes]]] = []
    status: dict[int, str] = {}
    tries = dict.fromkeys(range(len(runs)), 0)
    layout = f"{base}/<field=value,...>/seed<k>" if sweeps else f"{base}/seed<k>"
    what = (f"{len(combos)} combination(s) x seeds {seeds}" if sweeps else f"seeds {seeds}")
    how = (f"as Ray tasks ({launcher.describe()})" if launcher is not None
           else f"{jobs} at a time")
    print(f"training {what} into {layout}, {how}; follow one with `tail -f "
          f"<run>/train.log` (full output in <run>/output.log)", flush=True)

    def start(k: int, resume: bool) -> typing.Any:
        _name, combo, s, run_dir = runs[k]
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            cmd = [sys.executable, "-m", "mtrl", "train", "--resume", str(run_dir),
                   "--no-progress"]
        else:
            extra = [tok for k_, v in combo for tok in (f"--{k_}", v)]
            cmd = [sys.executable, "-m", "mtrl", "train", *child, *extra, "--seed", str(s),
                   "--run-dir", str(run_dir), "--no-progress"]
        if launcher is not None:
            return launcher.start(cmd, run_dir / "output.log", {"OMP_NUM_THREADS": str(threads)})
        # The run's own progress lines go to train.log; everything it prints to output.log.
        log = open(run_dir / "output.log", "ab")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    last_report = time.monotonic()
    while pending or running:
        while pending and len(running) < jobs:
            k = pending.pop(0)
            resume = tries[k] > 0
            running.append((k, start(k, resume)))
            what = f"resumed (retry {tries[k]})" if resume else "started"
            print(f"{runs[k][0]}: {what}", flush=True)
        time.sleep(0.5)
        for k, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((k, proc))
            name, _combo, _s, run_dir = runs[k]
            if proc.returncode == 0:
                status[k] = "done"
                print(f"{name}: done  ({run_dir / 'train.log'})", flush=True)
                continue
            has_ckpt = any((run_dir / "checkpoints").glob("ckpt_*.json"))
            if tries[k] < args.retries and has_ckpt:
                tries[k] += 1
                print(f"{name}: FAILED ({proc.returncode}); resuming from its last checkpoint "
                      f"({run_dir / 'output.log'})", flush=True)
                pending.insert(0, k)
                continue
            status[k] = f"FAILED ({proc.returncode})"
            print(f"{name}: FAILED ({proc.returncode})  ({run_dir / 'output.log'})", flush=True)
        if running and time.monotonic() - last_report > 60.0:
            last_report = time.monotonic()
            for k, _proc in running:
                print(f"{runs[k][0]}: {_last_line(runs[k][3] / 'train.log')}", flush=True)
    width = max(len(r[0]) for r in runs)
    print(f"\n{'run':<{width}}  status      retries  latest evaluation")
    for k, (name, _combo, _s, run_dir) in enumerate(runs):
        result = _run_result(run_dir) if status[k] == "done" else "-"
        print(f"{name:<{width}}  {status[k]:<10}  {tries[k]:>7}  {result}")
    if launcher is not None:
        launcher.close()
    pattern = f"{base}/*/seed*" if sweeps else f"{base}/seed*"
    print(f"report: mtrl report {pattern} --markdown {base}/report.md")
    return 1 if any(v != "done" for v in status.values()) else 0


def _last_line(path: Path) -> str:
    """The last line of a run's train.log without its time stamp ('starting' before one)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "starting"
    return lines[-1].split("  ", 1)[-1] if lines else "starting"


def cmd_train(args: argparse.Namespace, overrides: list[tuple[str, str]],
              prepare: Callable[[C.TrainConfig], C.TrainConfig] | None = None) -> int:
    """Train a preset or resume a run; ``prepare`` turns a new run's preset config into what
    is trained (``mtrl distill``), before the overrides."""
    from mtrl.presets import get_preset
    from mtrl.rundir import RunDir
    from mtrl.runner import train

    if args.checkpoint is not None and args.resume is None:
        raise CLIError("--checkpoint is only used together with --resume RUN_DIR")
    if getattr(args, "retries", 0):
        raise CLIError("--retries is only used with --seeds or --sweep (runs it launches)")
    if getattr(args, "launcher", "local") != "local" or getattr(args, "resources_per_run", None):
        raise CLIError("--launcher and --resources-per-run are only used with --seeds or "
                       "--sweep (runs it launches)")
    _check_file_arg("--checkpoint", args.checkpoint)
    _check_jobs(args)
    _check_dir_arg("--run-dir", args.run_dir)
    if args.resume is not None:
        if not args.resume.strip():
            raise CLIError("--resume is empty; name the run directory to resume")
        run_dir = Path(args.resume)
        if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
            raise CLIError("--run-dir and --resume name different directories; drop --run-dir")
        saved = RunDir(run_dir).config()
        RunDir(run_dir).metadata()  # a damaged metadata.json fails here, naming the file
        if args.preset:
            cfg = get_preset(args.preset)
            cfg.seed = saved.seed if args.seed is None else cfg.seed
        else:
            cfg = copy.deepcopy(saved)
        _apply_common(cfg, args, overrides)
        cfg.run_dir = str(run_dir)
        try:
            C.validate(cfg)
        except ConfigError as e:
            if overrides or args.preset or any(
                    getattr(args, k) is not None for k in ("seed", "total_steps", "device")):
                raise  # the command line may be at fault
            raise ConfigError(f"{RunDir(run_dir).config_path}: {e}") from None
        RunDir(run_dir).check_resume_compatible(saved, cfg)
        result = train(cfg, run_dir, resume=True,
                       checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    else:
        if not args.preset:
            raise CLIError("name a preset (see `mtrl presets`) or pass --resume RUN_DIR")
        cfg = get_preset(args.preset)
        if prepare is not None:
            cfg = prepare(cfg)
        _apply_common(cfg, args, overrides)
        if args.run_dir:
            cfg.run_dir = args.run_dir
        C.validate(cfg)
        _shorten_warmup(cfg, overrides)
        result = train(cfg, cfg.run_dir)
    if result.final_eval is not None:
        print(result.final_eval.table())
        teachers = Path(result.run_dir) / "eval" / "teachers.json"
        if teachers.exists():  # distillation: the reference the student is measured against
            ref = json.loads(teachers.read_text())
            print(f"teachers (same protocol): success {ref['success_mean']:.3f}, "
                  f"return {ref['return_mean']:.2f}")
    print(f"run directory: {result.run_dir}  (env steps {result.env_steps}, "
          f"last checkpoint {result.last_checkpoint})")
    return 0


def to_distill_config(cfg: C.TrainConfig) -> C.TrainConfig:
    """A preset turned into a distillation run: its env and its actor architecture become the
    student (``agent.name='distill'``); SAC presets keep their actor learning rate."""
    if cfg.agent.name == "distill":
        return cfg
    a = cfg.agent
    if a.name in ("mtsac", "distral-sac"):
        a.distill.lr = a.sac.actor_lr
    elif a.name in ("mta2c", "distral-a2c"):
        a.distill.lr = a.a2c.lr
    elif a.name == "mtimpala":
        a.distill.lr = a.impala.lr
    # The sections of the replaced algorithm no longer apply.
    a.sac, a.a2c, a.ppo, a.distral = C.SACConfig(), C.A2CConfig(), C.PPOConfig(), C.DistralConfig()
    a.impala = C.IMPALAConfig()
    a.name = "distill"
    if not a.actor_hidden:
        a.actor_hidden = [256]
    a.actor_combiner = a.critic_combiner = "mean"
    a.popart = None
    cfg.preset = f"{cfg.preset}-distill" if cfg.preset else "distill"
    return cfg


def cmd_distill(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    if args.resume:
        if args.teacher or args.teachers:
            raise CLIError("--resume continues with the run's own teachers; drop --teacher(s)")
        return cmd_train(args, overrides)
    if not args.preset:
        raise CLIError("name a preset (toy-distill, or any preset whose env and actor "
                       "architecture the student takes) or pass --resume RUN_DIR")
    for spec in args.teacher:
        if not spec.strip() or spec.split("=", 1)[-1].strip() == "":
            raise CLIError(f"--teacher {spec!r} names no teacher; give TASK=PATH")
    if args.teachers is not None and not args.teachers.strip():
        raise CLIError("--teachers is empty; name a directory of teachers or a run")
    specs = [*args.teacher, *([args.teachers] if args.teachers else [])]

    def prepare(cfg: C.TrainConfig) -> C.TrainConfig:
        was = cfg.agent.name
        cfg = to_distill_config(cfg)
        if was != "distill":
            print(f"note: distilling into {args.preset}'s env and actor "
                  f"({cfg.agent.actor_arch}, hidden {cfg.agent.actor_hidden}); its agent "
                  f"{was!r} is replaced by 'distill'", file=sys.stderr)
        if specs:
            cfg.agent.distill.teachers = specs
        return cfg

    return cmd_train(args, overrides, prepare)


def cmd_eval(args: argparse.Namespace) -> int:
    _check_out_arg("--json", args.json)
    if args.device not in C.DEVICES:
        raise ConfigError(f"--device={args.device!r} is not valid; allowed: {', '.join(C.DEVICES)}")
    _check_file_arg("--checkpoint", args.checkpoint)
    if args.episodes_per_task is not None and not 0 < args.episodes_per_task <= C.MAX_INT:
        raise ConfigError(f"--episodes-per-task={args.episodes_per_task} must be > 0 (and fit "
                          "in 64 bits)")
    if not 1 <= args.video_every <= C.MAX_INT:
        raise ConfigError(f"--video-every={args.video_every} must be >= 1 (and fit in 64 bits)")
    from mtrl import video as V

    for flag, value, lo, hi in (("--video-fps", args.video_fps, 1, V.MAX_FPS),
                                ("--video-size", args.video_size, V.MIN_SIZE, V.MAX_SIZE),
                                ("--video-jobs", args.video_jobs, 1, 256)):
        if value is not None and not lo <= value <= hi:
            raise ConfigError(f"{flag}={value} must be in [{lo}, {hi}]")
    video_tasks = [t.strip() for t in (args.video_tasks or "").split(",") if t.strip()]
    if args.video_tasks is not None and not video_tasks:
        raise ConfigError(f"--video-tasks={args.video_tasks!r} lists no tasks")
    if args.video and video_tasks:
        V.select_tasks(args.run_dir, video_tasks)  # before a long protocol evaluation
    if args.no_table and not args.video:
        raise CLIError("--no-table only makes sense with --video")
    if not args.no_table:
        _eval_table(args)
    if args.video:
        vids = V.record_videos(args.run_dir, checkpoint=args.checkpoint, every=args.video_every,
                               fps=args.video_fps, size=args.video_size, fmt=args.video_format,
                               tasks=video_tasks or None, jobs=args.video_jobs,
                               device=args.device)
        if vids:
            print(f"videos rendered with {next(iter(vids.values()))['renderer']}")
        for v in vids.values():
            print(f"video {v['path']}: {v['frames']} frames, {v['steps']} steps, "
                  f"success {'yes' if v['success'] else 'no'}, {v['seconds']:.1f} s, "
                  f"{v['width']}x{v['height']}, {v['bytes'] / 1e6:.2f} MB")
        if vids:
            total = sum(v["bytes"] for v in vids.values())
            print(f"videos: {len(vids)} files, {total / 1e6:.2f} MB in all")
    return 0


def _eval_table(args: argparse.Namespace) -> None:
    from mtrl.evaluation import POLICY_TITLES, evaluate_run
    from mtrl.logging import write_json

    ev = evaluate_run(
        args.run_dir,
        checkpoint=args.checkpoint,
        episodes_per_task=args.episodes_per_task,
        device=args.device,
    )
    print(f"run {ev.run_dir}, checkpoint {ev.checkpoint} (env step {ev.step})")
    print(f"protocol: {ev.protocol}")
    if ev.extra:
        print("\ntask policies πi (the policies that act in training):")
    print(ev.result.table())
    for name, res in ev.extra.items():
        print(f"\n{POLICY_TITLES.get(name, name)}:")
        print(res.table())
    if args.json:
        write_json(Path(args.json), ev.to_json())
        print(f"wrote {args.json}")


def cmd_plot(args: argparse.Namespace) -> int:
    from mtrl.plotting import AUTO_METRIC, METRICS, plot_profiles, plot_runs

    if args.metric != AUTO_METRIC and args.metric not in METRICS:
        raise ConfigError(f"--metric={args.metric!r} is not valid; allowed: {AUTO_METRIC}, "
                          f"{', '.join(METRICS)}")
    _check_out_arg("--out", args.out)
    grouping = {"labels": args.label, "group_by": args.group_by,
                "allow_mixed": args.allow_mixed, "title": args.title}
    if args.profile:
        if args.metric != AUTO_METRIC:
            raise CLIError("--profile draws the scores of the runs' latest evaluations (as "
                           "`mtrl report`); --metric applies to learning curves only")
        try:
            info = plot_profiles(args.run_dirs, args.out, **grouping)
        except FileNotFoundError as e:
            raise CLIError(str(e)) from None
    else:
        info = plot_runs(args.run_dirs, args.out, metric=args.metric, **grouping)
    for note in info["notes"]:
        print(note, file=sys.stderr)
    print(f"wrote {args.out}: {info['metric']}, panels {info['panels']}, "
          f"methods {info['methods']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mtrl.analysis import build_report, load_runs, report_markdown, split_notes
    from mtrl.logging import write_json

    if args.bootstrap < 100:
        raise ConfigError(f"--bootstrap={args.bootstrap} must be >= 100")
    if args.bootstrap > MAX_BOOTSTRAP:
        raise ConfigError(f"--bootstrap={args.bootstrap} must be <= {MAX_BOOTSTRAP} (more "
                          "resamples do not change the reported intervals, only the run time)")
    _check_out_arg("--json", args.json)
    _check_out_arg("--markdown", args.markdown)
    try:
        runs, notes = load_runs(args.run_dirs, labels=args.label, group_by=args.group_by)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    _check_bootstrap_memory(args.bootstrap, runs)
    report = build_report(runs, reps=args.bootstrap, allow_mixed=args.allow_mixed,
                          compare=[(x, y) for x, y in args.compare])
    for note in [*notes, *split_notes(report)]:
        print(note, file=sys.stderr)
    text = report_markdown(report)
    print(text, end="")
    if args.json:
        write_json(Path(args.json), report)
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
        print(f"wrote {args.markdown}")
    return 0


MAX_BOOTSTRAP = 1_000_000


def _check_bootstrap_memory(reps: int, runs: list[typing.Any]) -> None:
    """The bootstrap holds ``reps × runs × tasks`` indices and scores of each method."""
    by_method: dict[str, list[typing.Any]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(r)
    cells = max(len(rs) * max(len(r.tasks) for r in rs) for rs in by_method.values())
    need = reps * cells * 3 * 8  # int64 indices, the repeated matrix and the resample
    available = C.machine_memory()
    if available is not None and need > available:
        raise ConfigError(f"--bootstrap={reps} needs ~{C.format_bytes(need)} of memory for "
                          f"{cells} run x task scores; this machine has "
                          f"{C.format_bytes(available)}")


def describe_preset(cfg: C.TrainConfig) -> str:
    """The preset as it will run: a header with the resolved task list and env count, then
    the config without the env fields its env ignores and the agent sections its agent does
    not read (``config.yaml`` of a run holds them all)."""
    import yaml

    from mtrl.registry import AGENTS, ENVS

    d = C.to_dict(cfg)
    used_env = set(ENVS.get(cfg.env.name, "env.name")["uses"])
    for field in {f for e in ENVS for f in e["uses"]} - used_env:
        d["env"].pop(field, None)
    sections = set(AGENTS.get(cfg.agent.name, "agent.name").get("sections", ()))
    for sec in C.AGENT_SECTIONS:
        if sec not in sections:
            d["agent"].pop(sec, None)
    names = C.task_names(cfg.env)
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    head = (f"# {cfg.preset or 'config'}: {len(names)} task(s) ({shown}), "
            f"{len(names) * cfg.env.envs_per_task} training env(s), {cfg.total_steps:,} env "
            f"steps\n# fields that {cfg.env.name!r} and {cfg.agent.name!r} do not use are not "
            "shown\n")
    return head + yaml.safe_dump(d, sort_keys=False)


def cmd_presets(args: argparse.Namespace) -> int:
    from mtrl.presets import DESCRIPTIONS, PRESETS, get_preset

    if args.name:
        print(describe_preset(get_preset(args.name)), end="")
        return 0
    width = max(len(n) for n in PRESETS)
    for name in PRESETS:
        print(f"{name:<{width}}  {DESCRIPTIONS.get(name, '')}")
    return 0


_COMMANDS = ("train", "distill", "eval", "plot", "report", "presets")


def main(argv: list[str] | None = None) -> int:
    from mtrl.analysis import RunDataError
    from mtrl.checkpoint import CheckpointError
    from mtrl.errors import CollectorError
    from mtrl.rundir import ResumeError
    from mtrl.runner import NonFiniteLossError

    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = prepare_plugins(argv)  # import --plugin modules; train/distill record them
        if argv and argv[0] == "train":
            rest, overrides = split_overrides(argv[1:])
            targs = parser.parse_args(["train", *rest])
            if targs.seeds is not None or targs.sweep:
                return cmd_train_seeds(argv[1:], targs, overrides)
            return cmd_train(targs, overrides)
        if argv and argv[0] == "distill":
            rest, overrides = split_overrides(argv[1:])
            return cmd_distill(parser.parse_args(["distill", *rest]), overrides)
        args = parser.parse_args(argv)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "plot":
            return cmd_plot(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "presets":
            return cmd_presets(args)
        parser.print_help()
        return EXIT_USAGE
    except UsageError as e:
        if e.prog == "mtrl" and argv and argv[0] in _COMMANDS:
            e.prog = f"mtrl {argv[0]}"  # argparse reports leftovers at the top level
        print(f"mtrl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, CLIError, ResumeError, RunDataError) as e:
        print(f"mtrl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (CheckpointError, NonFiniteLossError, CollectorError) as e:
        print(f"mtrl: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file or directory that cannot be read or written
        print(f"mtrl: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print("mtrl: error: out of memory; reduce the sizes of the run (replay.capacity, "
              "agent.batch_size, hidden sizes, envs)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mtrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
