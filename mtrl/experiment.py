"""What every script in ``experiments/`` does: parse ``--seed``, ``--total-steps``, ``--run-dir``,
``--device``, build a preset, let the script adjust it, validate, train and print the result."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from mtrl.config import TrainConfig, validate
from mtrl.presets import get_preset
from mtrl.runner import train


def run_preset_script(preset: str, doc: str | None,
                      configure: Callable[[TrainConfig], None] | None = None) -> None:
    """``python experiments/<name>.py`` = ``mtrl train <preset>``; ``configure`` may edit the
    config (every hyperparameter is a field of it) before it is validated."""
    parser = argparse.ArgumentParser(description=(doc or preset).splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-steps", type=int, default=None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    cfg = get_preset(preset)
    cfg.seed = args.seed
    cfg.device = args.device
    if args.total_steps is not None:
        cfg.total_steps = args.total_steps
    if configure is not None:
        configure(cfg)
    validate(cfg)
    result = train(cfg, args.run_dir)
    if result.final_eval is not None:
        print(result.final_eval.table())
    print(f"run directory: {result.run_dir}")
