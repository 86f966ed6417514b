"""Multi-task A2C with PopArt (Hessel et al. 2019) on six Atari games at once, from a script.

Does what ``mtrl train atari6-a2c-popart`` does: one agent (Nature CNN torso, linear policy head
on [features, one_hot(game)], one PopArt-normalized value output per game) on Pong, Breakout,
SpaceInvaders, Seaquest, BeamRider and Qbert with unclipped rewards; per-game returns,
human-normalized scores and PopArt statistics in TensorBoard.

    python experiments/atari6_a2c_popart.py --seed 0 --run-dir runs/atari6-popart-s0
"""

from __future__ import annotations

from mtrl.config import TrainConfig
from mtrl.experiment import run_preset_script


def configure(cfg: TrainConfig) -> None:
    """Edit the config here; every hyperparameter is a field of it."""
    # Other games: cfg.env.tasks = ["MsPacman", "Boxing", "Freeway"]
    # The clipped-reward baseline: cfg.agent.popart = False; cfg.env.clip_rewards = True
    # One output head per game for the policy too: cfg.agent.actor_arch = "multihead"


if __name__ == "__main__":
    run_preset_script("atari6-a2c-popart", __doc__, configure)
