"""`mtrl train mt50-soft-modular` from a script (setup: mtrl/presets.py).

    python experiments/mt50_soft_modular.py --seed 0 --run-dir runs/mt50-soft-modular-s0
"""

from __future__ import annotations

from mtrl.config import TrainConfig
from mtrl.experiment import run_preset_script


def configure(cfg: TrainConfig) -> None:
    """Edit the config here; every hyperparameter is a field of it."""
    # Architecture sizes live in cfg.agent.arch, e.g. cfg.agent.arch.num_modules = 4


if __name__ == "__main__":
    run_preset_script("mt50-soft-modular", __doc__, configure)
