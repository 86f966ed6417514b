"""mtrl MT-PPO training throughput relative to stable-baselines3's PPO (used by atari_speed.py).

Both learn one game with the same network (Nature CNN torso shared by a linear policy and a
linear value head), the same PPO settings (n_steps 128 per env, 4 epochs, minibatches of 256
rows, clip 0.1, GAE λ 0.95, γ 0.99, entropy 0.01, value 0.5, Adam lr 2.5e-4 ε 1e-5, gradient clip
0.5, advantages standardized per minibatch, no value clipping), the same number of envs and
the same env: ale_py's native vector env behind the adapter of ``_a2c_vs_sb3.py``. mtrl runs its
real training loop (:func:`mtrl.runner.train`, PopArt off: one game, one task, so its per-task
standardization is SB3's per-minibatch one); SB3 runs ``PPO.learn``. Each side first runs a short
untimed warm-up, then timed runs alternate (order flipped every round), each counted from
construction to the end of training. The ratio is the median over rounds of mtrl's frames/s over
SB3's.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from _a2c_vs_sb3 import FRAME_SKIP, ALEVecEnv, time_mtrl_train

N_STEPS, EPOCHS, MINIBATCH = 128, 4, 256


def _sb3_model(game: str, num_envs: int, seed: int, device: str) -> Any:
    from stable_baselines3 import PPO

    return PPO(
        "CnnPolicy", ALEVecEnv(game, num_envs, seed), n_steps=N_STEPS, batch_size=MINIBATCH,
        n_epochs=EPOCHS, learning_rate=2.5e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.1,
        ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, normalize_advantage=True, seed=seed,
        device=device, verbose=0,
        policy_kwargs={"net_arch": [], "share_features_extractor": True},
    )


def _mtrl_config(game_task: str, num_envs: int, steps: int, device: str) -> Any:
    from mtrl.presets import get_preset

    cfg = get_preset("atari6-ppo-popart")
    cfg.env.tasks = [game_task]
    cfg.env.envs_per_task = num_envs
    cfg.agent.popart = False
    cfg.agent.actor_arch = cfg.agent.critic_arch = "mlp"
    cfg.agent.actor_hidden, cfg.agent.critic_hidden = [], []
    p = cfg.agent.ppo
    p.n_steps, p.epochs, p.minibatches = N_STEPS, EPOCHS, num_envs * N_STEPS // MINIBATCH
    p.clip_range, p.gae_lambda, p.ent_coef, p.vf_coef, p.lr = 0.1, 0.95, 0.01, 0.5, 2.5e-4
    cfg.total_steps = steps
    cfg.eval.every, cfg.eval.final = 0, False
    cfg.checkpoint.every = 0
    cfg.log.every = max(steps // 4, num_envs)
    cfg.log.progress_bar = False
    cfg.device = device
    return cfg


def _time_sb3(game: str, num_envs: int, steps: int, device: str) -> float:
    t0 = time.perf_counter()
    model = _sb3_model(game, num_envs, seed=0, device=device)
    model.learn(total_timesteps=steps)
    dt = time.perf_counter() - t0
    done = model.num_timesteps
    model.get_env().close()
    return done * FRAME_SKIP / dt


def measure_ppo_vs_sb3(*, game: str = "pong", game_task: str = "Pong", num_envs: int = 8,
                       steps: int = 8192, rounds: int = 5, device: str = "auto"
                       ) -> dict[str, Any]:
    """Frames/s of mtrl's PPO training and SB3's on one game; ratio mtrl/SB3 per round."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if (num_envs * N_STEPS) % MINIBATCH:
        raise ValueError(f"num_envs × {N_STEPS} must be a multiple of {MINIBATCH}")
    warm = num_envs * N_STEPS
    time_mtrl_train(_mtrl_config(game_task, num_envs, warm, device))  # warm-up
    _time_sb3(game, num_envs, warm, device)
    mtrl_fps: list[float] = []
    sb3_fps: list[float] = []
    for r in range(rounds):
        order = ("mtrl", "sb3") if r % 2 == 0 else ("sb3", "mtrl")
        for who in order:
            if who == "mtrl":
                mtrl_fps.append(time_mtrl_train(_mtrl_config(game_task, num_envs, steps,
                                                             device)))
            else:
                sb3_fps.append(_time_sb3(game, num_envs, steps, device))
    ratios = [m / s for m, s in zip(mtrl_fps, sb3_fps, strict=True)]
    return {
        "ppo_vs_sb3": statistics.median(ratios),
        "ppo_vs_sb3_rounds": ratios,
        "ppo_mtrl_frames_per_sec": statistics.median(mtrl_fps),
        "ppo_sb3_frames_per_sec": statistics.median(sb3_fps),
        "ppo_setup": {"game": game_task, "num_envs": num_envs, "n_steps": N_STEPS,
                      "epochs": EPOCHS, "minibatch": MINIBATCH, "env_steps_per_run": steps,
                      "rounds": rounds, "device": device,
                      "torch_threads": torch.get_num_threads()},
    }
