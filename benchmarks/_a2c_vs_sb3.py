"""mtrl MT-A2C training throughput relative to stable-baselines3's A2C (used by atari_speed.py).

Both learn on the same game with the same network (Nature CNN torso shared by a linear policy
and a linear value head, orthogonal initialization), the same A2C hyperparameters (n_steps 5,
RMSprop lr 7e-4 α 0.99 ε 1e-5, entropy 0.01, value 0.5, gradient clip 0.5, γ 0.99, no GAE),
the same number of envs, and the same env: ale_py's native vector env with identical settings
(for SB3 behind a small ``VecEnv`` adapter, so the comparison measures the learners and their
loops rather than two different Atari wrappers). mtrl runs its real training loop
(:func:`mtrl.runner.train`: rollout storage on the device, logging, a final checkpoint) with PopArt
off so that both run the same algorithm; SB3 runs ``A2C.learn``. Each side first runs a short
untimed warm-up, then timed runs alternate between the two (order flipped every round). Each
timed run counts from construction (env and networks) to the end of training, for both; mtrl's
also writes TensorBoard logs, metadata and a final checkpoint. The ratio is the median over
rounds of mtrl's frames/s over SB3's.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

FRAME_SKIP = 4


class ALEVecEnv:
    """A stable-baselines3 ``VecEnv`` over ``ale_py.vector_env.AtariVectorEnv`` (same-step
    autoreset; SB3's ``terminal_observation`` / ``TimeLimit.truncated`` infos)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from stable_baselines3.common.vec_env.base_vec_env import VecEnv

        class _Impl(VecEnv):
            def __init__(self, game: str, num_envs: int, seed: int) -> None:
                from ale_py.vector_env import AtariVectorEnv

                self.env = AtariVectorEnv(
                    game, num_envs, autoreset_mode="SameStep", full_action_space=True,
                    repeat_action_probability=0.25, reward_clipping=False,
                    use_fire_reset=False, noop_max=30, frameskip=FRAME_SKIP, stack_num=4,
                    episodic_life=False,
                )
                self._seed = seed
                self._actions: np.ndarray | None = None
                super().__init__(num_envs, self.env.single_observation_space,
                                 gym.spaces.Discrete(18))

            def reset(self) -> np.ndarray:
                obs, _ = self.env.reset(seed=self._seed)
                return obs

            def step_async(self, actions: np.ndarray) -> None:
                self._actions = np.asarray(actions, dtype=np.int64)

            def step_wait(self) -> Any:
                obs, rew, term, trunc, info = self.env.step(self._actions)
                dones = term | trunc
                infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
                for i in np.flatnonzero(dones):
                    infos[i]["terminal_observation"] = info["final_obs"][i]
                    infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
                return obs, rew.astype(np.float32), dones, infos

            def close(self) -> None:
                self.env.close()

            def get_attr(self, name: str, indices: Any = None) -> list[Any]:
                return [getattr(self, name)] * self.num_envs

            def set_attr(self, name: str, value: Any, indices: Any = None) -> None:
                setattr(self, name, value)

            def env_method(self, *args: Any, **kwargs: Any) -> list[Any]:
                return [None] * self.num_envs

            def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
                return [False] * self.num_envs

        return _Impl(*args, **kwargs)


def _sb3_model(game: str, num_envs: int, seed: int) -> Any:
    import torch
    from stable_baselines3 import A2C

    venv = ALEVecEnv(game, num_envs, seed)
    return A2C(
        "CnnPolicy", venv, n_steps=5, learning_rate=7e-4, gamma=0.99, gae_lambda=1.0,
        ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, use_rms_prop=True, rms_prop_eps=1e-5,
        normalize_advantage=False, seed=seed, device="cpu" if not torch.cuda.is_available()
        else "cuda", verbose=0,
        policy_kwargs={"net_arch": [], "share_features_extractor": True},
    )


def _mtrl_config(game_task: str, num_envs: int, steps: int, device: str) -> Any:
    from mtrl.presets import get_preset

    cfg = get_preset("atari6-a2c")
    cfg.env.tasks = [game_task]
    cfg.env.envs_per_task = num_envs
    cfg.env.clip_rewards = False
    cfg.agent.popart = False
    cfg.agent.a2c.optimizer = "rmsprop"  # PyTorch's RMSprop, as SB3's A2C default
    cfg.agent.actor_arch = cfg.agent.critic_arch = "mlp"
    cfg.agent.actor_hidden, cfg.agent.critic_hidden = [], []
    cfg.total_steps = steps
    cfg.eval.every, cfg.eval.final = 0, False
    cfg.checkpoint.every = 0
    cfg.log.every = max(steps // 4, num_envs)
    cfg.log.progress_bar = False
    cfg.device = device
    return cfg


def time_mtrl_train(cfg: Any) -> float:
    """Frames/s of ``mtrl.runner.train(cfg)`` into a temporary run directory, timed from
    construction (env + networks) to the end of training."""
    from mtrl.runner import train

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = train(cfg, Path(d) / "run")
        dt = time.perf_counter() - t0
    return res.env_steps * FRAME_SKIP / dt


def _time_sb3(game: str, num_envs: int, steps: int) -> float:
    # Timed from construction (env + networks), as mtrl's train() is.
    t0 = time.perf_counter()
    model = _sb3_model(game, num_envs, seed=0)
    model.learn(total_timesteps=steps)
    dt = time.perf_counter() - t0
    done = model.num_timesteps
    model.get_env().close()
    return done * FRAME_SKIP / dt


def measure_a2c_vs_sb3(*, game: str = "pong", game_task: str = "Pong", num_envs: int = 8,
                       steps: int = 8000, rounds: int = 5, device: str = "auto"
                       ) -> dict[str, Any]:
    """Frames/s of mtrl's A2C training and SB3's on one game; ratio mtrl/SB3 per round."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    time_mtrl_train(_mtrl_config(game_task, num_envs, num_envs * 40, device))  # warm-up
    _time_sb3(game, num_envs, num_envs * 40)
    mtrl_fps: list[float] = []
    sb3_fps: list[float] = []
    for r in range(rounds):
        order = ("mtrl", "sb3") if r % 2 == 0 else ("sb3", "mtrl")
        for who in order:
            if who == "mtrl":
                mtrl_fps.append(time_mtrl_train(_mtrl_config(game_task, num_envs, steps,
                                                             device)))
            else:
                sb3_fps.append(_time_sb3(game, num_envs, steps))
    ratios = [m / s for m, s in zip(mtrl_fps, sb3_fps, strict=True)]
    return {
        "a2c_vs_sb3": statistics.median(ratios),
        "a2c_vs_sb3_rounds": ratios,
        "a2c_mtrl_frames_per_sec": statistics.median(mtrl_fps),
        "a2c_sb3_frames_per_sec": statistics.median(sb3_fps),
        "a2c_setup": {"game": game_task, "num_envs": num_envs, "n_steps": 5,
                      "env_steps_per_run": steps, "rounds": rounds, "device": device,
                      "torch_threads": torch.get_num_threads()},
    }
