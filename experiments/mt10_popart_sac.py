"""MT-SAC with PopArt-normalized critics (Hessel et al. 2019) on Meta-World MT10, from a script.

Does what ``mtrl train mt10-popart-sac`` does: the Meta-World+ MT-SAC baseline with per-task
PopArt statistics on the critics (``popart/mu/<task>``, ``popart/sigma/<task>`` in TensorBoard).

    python experiments/mt10_popart_sac.py --seed 0 --run-dir runs/mt10-popart-s0
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

    cfg = get_preset("mt10-popart-sac")
    cfg.seed = args.seed
    cfg.device = args.device
    if args.total_steps is not None:
        cfg.total_steps = args.total_steps
    # Faster-moving statistics: cfg.agent.popart_beta = 1e-3
    # Combine with PCGrad: cfg.agent.actor_combiner = cfg.agent.critic_combiner = "pcgrad"
    validate(cfg)
    result = train(cfg, args.run_dir)
    if result.final_eval is not None:
        print(result.final_eval.table())
    print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
