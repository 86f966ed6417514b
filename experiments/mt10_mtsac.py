"""MT-SAC on Meta-World MT10 with the Meta-World+ baseline hyperparameters, from a script.

Does exactly what ``mtrl train mt10-mtsac`` does; edit the config below to experiment.

    python experiments/mt10_mtsac.py --seed 0 --total-steps 20000000 --run-dir runs/mt10-s0
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

    cfg = get_preset("mt10-mtsac")
    cfg.seed = args.seed
    cfg.device = args.device
    if args.total_steps is not None:
        cfg.total_steps = args.total_steps
    # Every hyperparameter is a field of cfg, e.g.:
    # cfg.agent.batch_size = 1280; cfg.agent.actor_hidden = [400, 400]; cfg.eval.every = 200_000
    validate(cfg)
    result = train(cfg, args.run_dir)
    if result.final_eval is not None:
        print(result.final_eval.table())
    print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
