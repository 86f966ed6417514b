"""MT-SAC + PCGrad (Yu et al. 2020) on Meta-World MT10, from a script.

Does what ``mtrl train mt10-pcgrad-sac`` does: the Meta-World+ MT-SAC baseline with PCGrad on the
actor and the critic losses, and the per-task gradient cosine matrix in TensorBoard every 1000
updates (``grad/cosine/actor``, ``grad/cosine/critic``).

    python experiments/mt10_pcgrad_sac.py --seed 0 --run-dir runs/mt10-pcgrad-s0
"""

from __future__ import annotations

from mtrl.config import TrainConfig
from mtrl.experiment import run_preset_script


def configure(cfg: TrainConfig) -> None:
    """Edit the config here; every hyperparameter is a field of it."""
    # PCGrad on the critic only: cfg.agent.actor_combiner = "mean"
    # Diagnostics more often: cfg.agent.combiner.diagnostics_every = 200


if __name__ == "__main__":
    run_preset_script("mt10-pcgrad-sac", __doc__, configure)
