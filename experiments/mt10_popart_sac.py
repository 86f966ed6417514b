"""MT-SAC with PopArt-normalized critics (Hessel et al. 2019) on Meta-World MT10, from a script.

Does what ``mtrl train mt10-popart-sac`` does: the Meta-World+ MT-SAC baseline with per-task
PopArt statistics on the critics (``popart/mu/<task>``, ``popart/sigma/<task>`` in TensorBoard).

    python experiments/mt10_popart_sac.py --seed 0 --run-dir runs/mt10-popart-s0
"""

from __future__ import annotations

from mtrl.config import TrainConfig
from mtrl.experiment import run_preset_script


def configure(cfg: TrainConfig) -> None:
    """Edit the config here; every hyperparameter is a field of it."""
    # Faster-moving statistics: cfg.agent.popart_beta = 1e-3
    # Combine with PCGrad: cfg.agent.actor_combiner = cfg.agent.critic_combiner = "pcgrad"


if __name__ == "__main__":
    run_preset_script("mt10-popart-sac", __doc__, configure)
