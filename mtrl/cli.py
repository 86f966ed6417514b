"""``mtrl train | eval | presets`` — thin: parse, validate, call the library.

Any config field can be overridden after the preset: ``--agent.batch-size 640``,
``--env.tasks reach-v3,push-v3``, ``--eval.every=0``. ``mtrl presets NAME`` prints every field of
a preset with its value.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from mtrl import config as C
from mtrl.config import ConfigError

EXIT_USAGE = 2


class CLIError(Exception):
    pass


def _build_parser() -> argparse.ArgumentParser:
    from mtrl.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="mtrl", description="Multi-task reinforcement learning: train, evaluate, presets."
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,presets}")

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

    e = sub.add_parser("eval", help="evaluate a saved policy of a run directory")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", help="checkpoint file (default: the run's latest)")
    e.add_argument("--episodes-per-task", type=int, help="default: the run's eval setting")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")

    p = sub.add_parser("presets", help="list presets, or show one preset's full config")
    p.add_argument("name", nargs="?")
    return parser


_TRAIN_FLAGS_WITH_VALUE = {"--seed", "--total-steps", "--run-dir", "--device", "--resume",
                           "--checkpoint"}
_TRAIN_FLAGS = _TRAIN_FLAGS_WITH_VALUE | {"--no-progress", "-h", "--help"}


def split_overrides(tokens: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate config overrides from ``train``'s own arguments.

    ``['toy-mtsac', '--seed', '1', '--agent.lr', '1e-3', '--eval.every=0']`` →
    ``(['toy-mtsac', '--seed', '1'], [('agent.lr', '1e-3'), ('eval.every', '0')])``.
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
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if paths.get(path) is bool and (nxt is None or nxt.startswith("--")):
                value = "true"
                i += 1
            elif nxt is None:
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


def cmd_train(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    from mtrl.presets import get_preset
    from mtrl.runner import check_resume_compatible, load_run_config, train

    if args.checkpoint and not args.resume:
        raise CLIError("--checkpoint is only used together with --resume RUN_DIR")
    if args.resume:
        run_dir = Path(args.resume)
        if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
            raise CLIError("--run-dir and --resume name different directories; drop --run-dir")
        saved = load_run_config(run_dir)
        if args.preset:
            cfg = get_preset(args.preset)
            cfg.seed = saved.seed if args.seed is None else cfg.seed
        else:
            cfg = copy.deepcopy(saved)
        _apply_common(cfg, args, overrides)
        cfg.run_dir = str(run_dir)
        C.validate(cfg)
        check_resume_compatible(saved, cfg, run_dir)
        result = train(cfg, run_dir, resume=True,
                       checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    else:
        if not args.preset:
            raise CLIError("name a preset (see `mtrl presets`) or pass --resume RUN_DIR")
        cfg = get_preset(args.preset)
        _apply_common(cfg, args, overrides)
        if args.run_dir:
            cfg.run_dir = args.run_dir
        C.validate(cfg)
        _shorten_warmup(cfg, overrides)
        result = train(cfg, cfg.run_dir)
    if result.final_eval is not None:
        print(result.final_eval.table())
    print(f"run directory: {result.run_dir}  (env steps {result.env_steps}, "
          f"last checkpoint {result.last_checkpoint})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mtrl.evaluation import PROTOCOL, evaluate_run
    from mtrl.logging import write_json

    if args.device not in C.DEVICES:
        raise ConfigError(f"--device={args.device!r} is not valid; allowed: {', '.join(C.DEVICES)}")
    if args.episodes_per_task is not None and args.episodes_per_task <= 0:
        raise ConfigError(f"--episodes-per-task={args.episodes_per_task} must be > 0")
    ev = evaluate_run(
        args.run_dir,
        checkpoint=args.checkpoint,
        episodes_per_task=args.episodes_per_task,
        device=args.device,
    )
    print(f"run {ev.run_dir}, checkpoint {ev.checkpoint} (env step {ev.step})")
    print(f"protocol: {PROTOCOL.format(n=ev.episodes_per_task)}")
    print(ev.result.table())
    if args.json:
        write_json(Path(args.json), ev.to_json())
        print(f"wrote {args.json}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from mtrl.presets import DESCRIPTIONS, PRESETS, get_preset

    if args.name:
        print(C.dump_yaml(get_preset(args.name)), end="")
        return 0
    width = max(len(n) for n in PRESETS)
    for name in PRESETS:
        print(f"{name:<{width}}  {DESCRIPTIONS.get(name, '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from mtrl.checkpoint import CheckpointError
    from mtrl.runner import NonFiniteLossError, ResumeError

    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            rest, overrides = split_overrides(argv[1:])
            return cmd_train(parser.parse_args(["train", *rest]), overrides)
        args = parser.parse_args(argv)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "presets":
            return cmd_presets(args)
        parser.print_help()
        return EXIT_USAGE
    except (ConfigError, CLIError, ResumeError) as e:
        print(f"mtrl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (CheckpointError, NonFiniteLossError) as e:
        print(f"mtrl: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mtrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
