"""`mtrl train mt10-routing` from a script (setup: mtrl/presets.py).

    python experiments/mt10_routing.py --seed 0 --run-dir runs/mt10-routing-s0
"""

from __future__ import annotations

from mtrl.config import TrainConfig
from mtrl.experiment import run_preset_script


def configure(cfg: TrainConfig) -> None:
    """Edit the config here; every hyperparameter is a field of it."""
    # Architecture sizes live in cfg.agent.arch, e.g. cfg.agent.arch.num_modules = 4


if __name__ == "__main__":
    run_preset_script("mt10-routing", __doc__, configure)
