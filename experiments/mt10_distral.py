"""`mtrl train mt10-distral` from a script: Distral (Teh et al. 2017) on SAC on MT10 — one SAC
actor and twin critic per task regularized toward a shared distilled policy π0 (setup:
mtrl/presets.py). Evaluation reports the task policies (eval/...) and π0 (eval/pi0/...).

    python experiments/mt10_distral.py --seed 0 --run-dir runs/mt10-distral-s0
"""

from __future__ import annotations

from mtrl.config import TrainConfig
from mtrl.experiment import run_preset_script


def configure(cfg: TrainConfig) -> None:
    """Edit the config here; every hyperparameter is a field of it."""
    # cfg.agent.distral.alpha = 1.0           # the KL-only variant
    # cfg.agent.distral.pi0_task_input = True  # π0 also sees the one-hot task


if __name__ == "__main__":
    run_preset_script("mt10-distral", __doc__, configure)
