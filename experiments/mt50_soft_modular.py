"""`mtrl train mt50-soft-modular` from a script (setup: mtrl/presets.py).

    python experiments/mt50_soft_modular.py --seed 0 --run-dir runs/mt50-soft-modular-s0
"""

from __future__ import annotations

import argparse

from mtrl.config import validate
from mtrl.presets import get_preset
from mtrl.runner import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-steps", type=int, default=None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    cfg = get_preset("mt50-soft-modular")
    cfg.seed = args.seed
    cfg.device = args.device
    if args.total_steps is not None:
        cfg.total_steps = args.total_steps
    # Architecture sizes live in cfg.agent.arch, e.g. cfg.agent.arch.num_modules = 4
    validate(cfg)
    result = train(cfg, args.run_dir)
    if result.final_eval is not None:
        print(result.final_eval.table())
    print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
