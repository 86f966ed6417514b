"""MT-SAC on Meta-World MT10 with the Meta-World+ baseline hyperparameters, from a script.

Does exactly what ``mtrl train mt10-mtsac`` does; edit the config below to experiment.

    python experiments/mt10_mtsac.py --seed 0 --total-steps 20000000 --run-dir runs/mt10-s0
"""

from __future__ import annotations

from mtrl.config import TrainConfig
from mtrl.experiment import run_preset_script


def configure(cfg: TrainConfig) -> None:
    """Edit the config here; every hyperparameter is a field of it."""
    # Every hyperparameter is a field of cfg, e.g.:
    # cfg.agent.batch_size = 1280; cfg.agent.actor_hidden = [400, 400]; cfg.eval.every = 200_000


if __name__ == "__main__":
    run_preset_script("mt10-mtsac", __doc__, configure)
