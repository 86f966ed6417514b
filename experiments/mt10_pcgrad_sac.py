"""MT-SAC + PCGrad (Yu et al. 2020) on Meta-World MT10, from a script.

Does what ``mtrl train mt10-pcgrad-sac`` does: the Meta-World+ MT-SAC baseline with PCGrad on the
actor and the critic losses, and the per-task gradient cosine matrix in TensorBoard every 1000
updates (``grad/cosine/actor``, ``grad/cosine/critic``).

    python experiments/mt10_pcgrad_sac.py --seed 0 --run-dir runs/mt10-pcgrad-s0
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

    cfg = get_preset("mt10-pcgrad-sac")
    cfg.seed = args.seed
    cfg.device = args.device
    if args.total_steps is not None:
        cfg.total_steps = args.total_steps
    # PCGrad on the critic only: cfg.agent.actor_combiner = "mean"
    # Diagnostics more often: cfg.agent.combiner.diagnostics_every = 200
    validate(cfg)
    result = train(cfg, args.run_dir)
    if result.final_eval is not None:
        print(result.final_eval.table())
    print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
