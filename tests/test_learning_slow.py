"""Learning checks that take minutes: run with `make test-slow` (pytest -m slow)."""

from __future__ import annotations

import pytest

from mtrl.evaluation import evaluate_run
from mtrl.presets import get_preset
from mtrl.runner import train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_mtsac_learns_on_three_seeds(tmp_path, seed):
    cfg = get_preset("toy-mtsac")
    cfg.seed = seed
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    train(cfg, tmp_path / f"s{seed}")
    ev = evaluate_run(str(tmp_path / f"s{seed}"))
    assert ev.result.success_mean >= 0.9, ev.result.table()


def _train_eval(tmp_path, preset: str, seed: int, **overrides) -> float:
    cfg = get_preset(preset)
    cfg.seed = seed
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    for key, value in overrides.items():
        obj = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, value)
    run = tmp_path / f"{preset}-{seed}-{len(overrides)}"
    train(cfg, run)
    return evaluate_run(str(run)).result.success_mean


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_pcgrad_learns_on_three_seeds(tmp_path, seed):
    assert _train_eval(tmp_path, "toy-pcgrad-sac", seed) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_popart_solves_tasks_of_very_different_reward_scales(tmp_path, seed):
    # Rewards ×1, ×10, ×100, ×1000 per task. Measured: PopArt 1.00 on seeds 0-2; the same
    # agent without PopArt 0.25, 0.25, 0.00 (the large-scale tasks dominate the shared nets).
    with_popart = _train_eval(tmp_path, "toy-popart-sac", seed)
    without = _train_eval(tmp_path, "toy-popart-sac", seed, agent__popart=False)
    assert with_popart >= 0.9
    assert without <= with_popart - 0.5


def _toy_arch_overrides(arch: str) -> dict:
    small = {
        "agent__arch__module_dim": 64, "agent__arch__embedding_dim": 64,
        "agent__arch__routing_dim": 64, "agent__arch__expert_hidden": [64],
        "agent__arch__router_modules": 4, "agent__arch__router_depth": 2,
    }
    return {"agent__actor_arch": arch, "agent__critic_arch": arch, **small}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["multihead", "soft-modular", "routing", "moe"])
def test_each_architecture_matches_the_mlp_on_conflicting_toy_tasks(tmp_path, arch):
    # toy-reach: the observation is only the position and the tasks' goals lie in different
    # directions, so the same observation needs opposite actions in different tasks. Same
    # budget as toy-mtsac (24k env steps); the one-hot MLP reaches 1.00 there.
    mlp = _train_eval(tmp_path, "toy-mtsac", 0)
    other = _train_eval(tmp_path, "toy-mtsac", 0, **_toy_arch_overrides(arch))
    assert other >= mlp - 0.1, (arch, other, mlp)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_a2c_learns_on_three_seeds(tmp_path, seed):
    cfg = get_preset("toy-a2c")
    cfg.seed = seed
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    train(cfg, tmp_path / f"s{seed}")
    ev = evaluate_run(str(tmp_path / f"s{seed}"))
    assert ev.result.success_mean >= 0.9, ev.result.table()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_distral_task_policies_learn_on_three_seeds(tmp_path, seed):
    # Measured: 0.975 / 0.975 / 1.0 (task policies); π0 sees no task id and stays near 0.25.
    assert _train_eval(tmp_path, "toy-distral", seed) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_toy_distral_sac_task_policies_learn(tmp_path, seed):
    # Measured (seed 0): task policies 1.0 from 8k env steps on; π0 0.2-0.4 (~16 s per run).
    assert _train_eval(tmp_path, "toy-distral-sac", seed) >= 0.9


@pytest.mark.slow
def test_atari6_a2c_popart_returns_rise(tmp_path):
    """~25 minutes on 2 CPU cores: 1.5M env steps of atari6-a2c-popart; the mean return of the
    last 20% of training episodes exceeds that of the first 20% by > 2 standard errors on at
    least two games (benchmarks/atari_learning.py, numbers in the README)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from atari_learning import run_check

    out = run_check(tmp_path / "run", total_steps=1_500_000, device="cpu")
    assert out["passed"], out["games"]


@pytest.mark.slow
def test_mtsac_learns_drawer_close_like_stable_baselines3(tmp_path):
    """~20 minutes on 2 CPU cores: `mt10-mtsac` on the single task drawer-close-v3 with the
    settings of benchmarks/sac_vs_sb3_learning.py (batch 256, 2k random warm-up steps), 20k env
    steps, seeds 0-2, 10 evaluation episodes each. SAC on this task fails on about one seed in
    seven at 20k steps, in mtrl and in stable-baselines3 alike (measured over seeds 0-6: mean
    success 0.84 on both sides; mtrl's seed 0 stalls at 0.1, SB3's seed 2 at 0.4), so the check
    is on the median of three seeds."""
    import statistics

    successes = []
    for seed in (0, 1, 2):
        successes.append(_train_eval(
            tmp_path, "mt10-mtsac", seed, env__name="metaworld",
            env__tasks=["drawer-close-v3"], agent__batch_size=256, total_steps=20_000,
            warmup_steps=2_000, eval__every=0, eval__episodes_per_task=10,
            checkpoint__every=0))
    assert statistics.median(successes) >= 0.8, successes


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_ppo_learns_on_three_seeds(tmp_path, seed):
    # Measured: 1.00 / 1.00 / 0.95 after the preset's 160k env steps.
    assert _train_eval(tmp_path, "toy-ppo", seed) >= 0.9
