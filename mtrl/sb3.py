"""stable-baselines3 interop: single-task SB3 teachers for policy distillation.

stable-baselines3 is an optional dependency (``pip install "mtrl[sb3]"``); it is imported only
inside the functions of this module, so ``import mtrl.sb3`` works without it.

* :func:`train_toy_teachers` trains one SB3 model per task of the point-reach toy
  (:class:`mtrl.envs.toy.PointReachTaskEnv`) and saves ``<out_dir>/goal-<k>.zip``;
* :func:`load_sb3_model` loads a saved model whatever its algorithm (PPO, A2C, DQN, SAC),
  detected from the zip's ``data`` record;
* :func:`evaluate_sb3_success` measures a saved toy teacher's deterministic success.

The teacher settings (:data:`TOY_TEACHER_SETTINGS`) were chosen for speed on a 2-core CPU:
teachers of a 3-task toy reach deterministic success ≥ 0.9 in seconds (per teacher: discrete
PPO ~6 s, continuous PPO ~4 s, SAC ~7 s, DQN ~12 s, A2C ~4 s). Not every seed makes it:
check with :func:`evaluate_sb3_success` (``experiments/train_sb3_teachers.py`` prints it).
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SB3_MISSING = (
    "stable-baselines3 is not installed; install it with `pip install stable-baselines3` "
    '(or `pip install "mtrl[sb3]"`)'
)

SB3_ALGOS = ("ppo", "a2c", "dqn", "sac")
"""The SB3 algorithms mtrl can load as teachers (and train on the toy)."""


def require_sb3() -> Any:
    """The ``stable_baselines3`` module, or an ImportError that says how to install it."""
    try:
        import stable_baselines3
    except ImportError as e:
        raise ImportError(SB3_MISSING) from e
    return stable_baselines3


def _algo_classes() -> dict[str, Any]:
    sb3 = require_sb3()
    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN, "sac": sb3.SAC}


# ------------------------------------------------------------------------------ loading
def detect_sb3_algo(path: str | Path) -> str:
    """The algorithm (``ppo``, ``a2c``, ``dqn``, ``sac``) of a model saved by SB3's ``save``.

    Read from the zip's JSON ``data`` record without unpickling anything: the policy class's
    module names DQN and SAC policies; PPO and A2C share ``ActorCriticPolicy`` and differ in
    their saved attributes (PPO has ``clip_range`` and ``n_epochs``)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a stable-baselines3 model zip: {e}") from e
    policy = data.get("policy_class", {})
    module = policy.get("__module__", "") if isinstance(policy, dict) else ""
    if module.endswith(".dqn.policies"):
        return "dqn"
    if module.endswith(".sac.policies"):
        return "sac"
    if module.endswith(".common.policies") or module.endswith(".ppo.policies"):
        return "ppo" if "clip_range" in data or "n_epochs" in data else "a2c"
    raise ValueError(
        f"{path}: unsupported stable-baselines3 policy class (module {module or '?'!r}); "
        f"supported algorithms: {', '.join(a.upper() for a in SB3_ALGOS)}"
    )


def load_sb3_model(path: str | Path, device: Any = "cpu") -> tuple[Any, str]:
    """``(model, algo)`` for a saved SB3 model, loaded for inference on ``device``.

    The learning-rate schedules are replaced by constants: they are not needed to act and are
    the usual reason an SB3 zip fails to unpickle under another Python version."""
    algo = detect_sb3_algo(path)
    cls = _algo_classes()[algo]
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0}
    model = cls.load(str(path), device=device, custom_objects=custom)
    return model, algo


# ------------------------------------------------------------------------------ toy teachers
@dataclass(frozen=True)
class TeacherSettings:
    """How to train one SB3 teacher: the number of parallel envs, the constructor's keyword
    arguments and the default number of env steps."""

    n_envs: int
    timesteps: int
    kwargs: dict[str, Any] = field(default_factory=dict)


TOY_TEACHER_SETTINGS: dict[tuple[str, bool], TeacherSettings] = {
    # (algo, discrete) -> settings. Small 32-32 nets; γ = 0.95 (episodes are 50 steps and the
    # goal is ~10 steps away); large learning rates because the tasks are easy.
    # Discrete PPO: 30k steps left 1 of 6 seed-0/1 teachers at 0.50 success; 50k gave 11/12
    # teachers >= 0.9 (one 0.85) over 4 seeds.
    ("ppo", True): TeacherSettings(8, 50_000, dict(
        n_steps=64, batch_size=256, n_epochs=4, learning_rate=3e-3, gamma=0.95, ent_coef=0.0,
        policy_kwargs=dict(net_arch=[32, 32]))),
    ("ppo", False): TeacherSettings(8, 30_000, dict(
        n_steps=64, batch_size=256, n_epochs=4, learning_rate=3e-3, gamma=0.95, ent_coef=0.0,
        policy_kwargs=dict(net_arch=[32, 32]))),
    # A2C is the least reliable here (seed 1: one teacher at 0.25); prefer PPO.
    ("a2c", True): TeacherSettings(8, 30_000, dict(
        n_steps=8, learning_rate=3e-3, gamma=0.95, policy_kwargs=dict(net_arch=[32, 32]))),
    ("dqn", True): TeacherSettings(1, 10_000, dict(
        learning_starts=500, batch_size=64, learning_rate=1e-3, gamma=0.95,
        exploration_fraction=0.3, target_update_interval=250, train_freq=1,
        policy_kwargs=dict(net_arch=[32, 32]))),
    ("sac", False): TeacherSettings(1, 2_000, dict(
        learning_starts=200, batch_size=64, learning_rate=3e-3, gamma=0.95,
        policy_kwargs=dict(net_arch=[32, 32]))),
}


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Small networks train fastest on one thread; the previous setting is restored."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_toy_teacher(
    path: str | Path,
    num_tasks: int,
    task: int,
    *,
    discrete: bool,
    total_timesteps: int | None = None,
    seed: int = 0,
    algo: str = "ppo",
    torch_threads: int | None = 1,
) -> Path:
    """Train one SB3 model on task ``task`` of the ``num_tasks``-task point-reach and save it to
    ``path`` (``.zip``). ``total_timesteps`` defaults to the settings' budget. Note that SB3
    seeds the global torch/numpy/random generators from ``seed``."""
    from mtrl.envs.toy import PointReachTaskEnv

    algo = algo.lower()
    settings = TOY_TEACHER_SETTINGS.get((algo, discrete))
    if settings is None:
        allowed = ", ".join(f"{a} ({'discrete' if d else 'continuous'})"
                            for a, d in TOY_TEACHER_SETTINGS)
        raise ValueError(f"algo={algo!r} with discrete={discrete} is not supported; "
                         f"allowed: {allowed}")
    cls = _algo_classes()[algo]
    from stable_baselines3.common.env_util import make_vec_env

    def make() -> PointReachTaskEnv:
        return PointReachTaskEnv(num_tasks, task, discrete=discrete)

    steps = settings.timesteps if total_timesteps is None else int(total_timesteps)
    with _torch_threads(torch_threads):
        venv = make_vec_env(make, n_envs=settings.n_envs, seed=seed)
        model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **settings.kwargs)
        model.learn(total_timesteps=steps)
        venv.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    # SB3 appends .zip when missing
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


def train_toy_teachers(
    out_dir: str | Path,
    num_tasks: int,
    *,
    discrete: bool,
    total_timesteps: int | None = None,
    seed: int = 0,
    algo: str = "ppo",
    torch_threads: int | None = 1,
) -> dict[str, Path]:
    """One SB3 teacher per task of the point-reach toy: ``<out_dir>/goal-<k>.zip`` for
    ``k < num_tasks``, trained with :data:`TOY_TEACHER_SETTINGS` for ``total_timesteps`` env
    steps *each* (default: the settings' budget), task ``k`` with seed ``seed + k``. Writes
    ``<out_dir>/teachers.json`` (algo, steps, seconds per teacher) and returns task → path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    record: dict[str, Any] = {"num_tasks": num_tasks, "discrete": discrete, "algo": algo,
                              "seed": seed, "teachers": {}}
    for k in range(num_tasks):
        name = f"goal-{k}"
        t0 = time.perf_counter()
        paths[name] = train_toy_teacher(
            out / f"{name}.zip", num_tasks, k, discrete=discrete,
            total_timesteps=total_timesteps, seed=seed + k, algo=algo,
            torch_threads=torch_threads,
        )
        record["teachers"][name] = {"path": paths[name].name,
                                    "seconds": round(time.perf_counter() - t0, 2)}
    (out / "teachers.json").write_text(json.dumps(record, indent=2) + "\n")
    return paths


def evaluate_sb3_success(
    path: str | Path,
    task: int,
    num_tasks: int,
    *,
    discrete: bool,
    episodes: int = 20,
    seed: int = 1_000,
) -> float:
    """Deterministic success rate of a saved SB3 toy teacher on its task: the fraction of
    ``episodes`` episodes with ``info["success"]`` at any step (the mtrl protocol)."""
    from mtrl.envs.toy import PointReachTaskEnv

    model, _ = load_sb3_model(path)
    env = PointReachTaskEnv(num_tasks, task, discrete=discrete, seed=seed)
    wins = []
    env.reset(seed=seed)
    for _ in range(episodes):
        obs, _ = env.reset()
        success = False
        while True:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            success |= bool(info["success"])
            if terminated or truncated:
                break
        wins.append(success)
    return float(np.mean(wins))
