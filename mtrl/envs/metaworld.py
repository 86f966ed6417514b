"""Meta-World v3 multi-task benchmarks (MT10, MT25, MT50, custom task lists).

Built with Meta-World's own constructors so that tasks, goals and rewards are exactly the
benchmark's: ``gym.make_vec("Meta-World/MT10", ...)`` for the standard sets and
``metaworld.make_mt_envs(task)`` per task for custom lists. Settings that make numbers
comparable are fixed and recorded: reward function v2, 500-step episodes, 50 goals per task
generated from the seed, no one-hot in the observation (the task id travels separately).

The seed passed here generates the 50 goals of every task; the same seed gives the same goals,
so evaluation envs are built with the training seed (training and evaluation share goals, as in
the multi-task benchmark).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from mtrl.envs.base import MultiTaskVectorEnv
from mtrl.registry import register_env

EPISODE_LENGTH = 500
GOALS_PER_TASK = 50
REWARD_VERSION = "v2"
_STANDARD = {"mt10": "MT10", "mt25": "MT25", "mt50": "MT50"}


def _quiet_gymnasium() -> None:
    # Meta-World's observation space has low == high on the goal dims; gymnasium's checker
    # warns about it on every step. We never normalize by the space bounds.
    warnings.filterwarnings("ignore", module=r"gymnasium\..*")


class MetaWorldMultiTaskEnv(MultiTaskVectorEnv):
    """MultiTaskVectorEnv over a Meta-World vector env (one sub-env per task)."""

    def set_goals(self, goal_index: np.ndarray, mask: np.ndarray) -> None:
        inner: Any = self.env
        if not isinstance(inner, gym.vector.SyncVectorEnv):
            raise RuntimeError("fixing goals per episode needs a sync vector env")
        for i in np.flatnonzero(mask):
            sub = inner.envs[i]
            tasks = sub.get_wrapper_attr("tasks")
            sub.unwrapped.set_task(tasks[int(goal_index[i]) % len(tasks)])  # type: ignore[attr-defined]

    def render_frames(self) -> list[np.ndarray]:
        """The frame of the one sub-env (MuJoCo off-screen: ``MUJOCO_GL`` egl or osmesa).

        Several MuJoCo GL contexts in one process draw tasks with each other's meshes (red
        arms, missing tables; docs/NOTES.md), so an env of several tasks refuses: render each
        task in its own process, as ``mtrl eval --video`` does (:mod:`mtrl.video`)."""
        if self.num_envs != 1:
            raise RuntimeError(
                f"rendering {self.num_envs} Meta-World envs in one process corrupts their "
                "frames; render one task per process (mtrl eval RUN --video does)")
        return [np.asarray(f) for f in _vec(self.env).call("render")]

    def set_terminate_on_success(self, flag: bool) -> None:
        _vec(self.env).call("toggle_terminate_on_success", bool(flag))

    def state_dict(self) -> dict[str, Any]:
        # Only random-generator states: restoring Meta-World's serialized tasks would unpickle
        # data from the checkpoint. Tasks are regenerated from the seed instead.
        rng = []
        for _env_id, ckpt in _vec(self.env).call("get_checkpoint"):
            rng.append({"env_rng_state": ckpt["env_rng_state"], "rng_state": ckpt["rng_state"]})
        return {**super().state_dict(), "rng": rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        current = _vec(self.env).call("get_checkpoint")
        if len(current) != len(state["rng"]):
            raise ValueError("env state has a different number of sub-envs")
        merged = []
        for (env_id, ckpt), saved in zip(current, state["rng"], strict=True):
            ckpt = dict(ckpt)
            ckpt["env_rng_state"] = saved["env_rng_state"]
            ckpt["rng_state"] = saved["rng_state"]
            merged.append((env_id, ckpt))
        _vec(self.env).call("load_checkpoint", merged)
        # Episodes in progress cannot be restored (the physics state is not checkpointed):
        # the caller resets, which starts new episodes on the restored random streams.


def make_metaworld_env(
    name: str,
    tasks: list[str] | None = None,
    *,
    seed: int,
    vector_strategy: str = "sync",
    evaluation: bool = False,
    render: bool = False,
    env_tasks: list[int] | None = None,
) -> MetaWorldMultiTaskEnv:
    """Build MT10/MT25/MT50 (``name`` = mt10|mt25|mt50) or a custom list (``name`` = metaworld).

    ``evaluation=True`` builds a sync env with autoreset disabled and terminate-on-success on,
    so that the evaluator can run one episode per goal (the Meta-World protocol).

    ``env_tasks``: build only the sub-envs of these tasks (global task ids, e.g. one remote
    env runner's share), each exactly as the whole benchmark builds it: the same 50 goals of
    the benchmark generated from ``seed``, the same env seed and env id; task names and ids
    stay the whole benchmark's.
    """
    import metaworld
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    _quiet_gymnasium()
    if evaluation:
        vector_strategy = "sync"
    mode = gym.vector.AutoresetMode.DISABLED if evaluation else gym.vector.AutoresetMode.SAME_STEP
    common: dict[str, Any] = {
        "reward_function_version": REWARD_VERSION,
        "max_episode_steps": EPISODE_LENGTH,
    }
    if render:
        common["render_mode"] = "rgb_array"

    if env_tasks is not None:
        if evaluation:
            raise ValueError("a subset of tasks is for training envs only")
        env, names, bench = _task_subset(name, tasks, env_tasks, seed=seed,
                                         vector_strategy=vector_strategy, mode=mode,
                                         common=common)
    elif name in _STANDARD:
        env = gym.make_vec(
            f"Meta-World/{_STANDARD[name]}",
            vector_strategy=vector_strategy,
            seed=seed,
            use_one_hot=False,
            autoreset_mode=mode,
            **common,
        )
        cls_to_name = {v.__name__: k for k, v in ALL_V3_ENVIRONMENTS.items()}
        names = [cls_to_name[c] for c in _vec(env).get_attr("task_name")]
        bench = _STANDARD[name]
    elif name == "metaworld":
        if not tasks:
            raise ValueError("a custom Meta-World env needs a task list")
        names = list(tasks)
        fns = [
            functools.partial(
                metaworld.make_mt_envs,
                task,
                seed=seed + idx,
                num_tasks=len(names),
                env_id=idx,
                use_one_hot=False,
                **common,
            )
            for idx, task in enumerate(names)
        ]
        vec_cls: Any = (
            gym.vector.SyncVectorEnv if vector_strategy == "sync" else gym.vector.AsyncVectorEnv
        )
        env = vec_cls(fns, autoreset_mode=mode)
        bench = "custom"
    else:
        raise ValueError(f"unknown Meta-World benchmark {name!r}")

    mw_env = MetaWorldMultiTaskEnv(
        env,
        names,
        np.arange(len(names)) if env_tasks is None else np.asarray(env_tasks, dtype=np.int64),
        max_episode_steps=EPISODE_LENGTH,
        goals_per_task=GOALS_PER_TASK,
        benchmark={
            "name": bench,
            "tasks": names,
            "metaworld_version": _version("metaworld"),
            "mujoco_version": _version("mujoco"),
            "reward_function_version": REWARD_VERSION,
            "episode_length": EPISODE_LENGTH,
            "goals_per_task": GOALS_PER_TASK,
            "success": "info['success'] == 1 at any step of the episode",
        },
    )
    if evaluation:
        _vec(env).call("toggle_sample_tasks_on_reset", False)
        mw_env.set_terminate_on_success(True)
    return mw_env


def _task_subset(name: str, tasks: list[str] | None, env_tasks: list[int], *, seed: int,
                 vector_strategy: str, mode: gym.vector.AutoresetMode, common: dict[str, Any]
                 ) -> tuple[gym.vector.VectorEnv, list[str], str]:
    """The sub-envs of tasks ``env_tasks`` of a benchmark, built as Meta-World's own
    constructors build them inside the whole benchmark (``metaworld.make_mt_envs``: MT10/25/50
    draw every task's goals from one generator seeded with ``seed``, so the benchmark object is
    built whole and only the chosen sub-envs are made; a custom list seeds task ``k`` with
    ``seed + k``). Returns the vector env, all task names and the benchmark's name."""
    import metaworld

    if len(set(env_tasks)) != len(env_tasks):
        raise ValueError(f"env_tasks={env_tasks} lists a task twice (one env per task)")
    vec_cls: Any = (
        gym.vector.SyncVectorEnv if vector_strategy == "sync" else gym.vector.AsyncVectorEnv
    )
    fns: list[Any]
    if name in _STANDARD:
        benchmark = getattr(metaworld, _STANDARD[name])(seed=seed)
        classes = list(benchmark.train_classes.items())
        names = [n for n, _ in classes]
        fns = [
            functools.partial(
                metaworld._init_each_env,
                env_cls=classes[k][1],
                tasks=[t for t in benchmark.train_tasks if t.env_name == classes[k][0]],
                seed=seed,
                env_id=k,
                num_tasks=len(classes),
                use_one_hot=False,
                **common,
            )
            for k in env_tasks
        ]
        bench = _STANDARD[name]
    elif name == "metaworld":
        if not tasks:
            raise ValueError("a custom Meta-World env needs a task list")
        names = list(tasks)
        fns = [
            functools.partial(metaworld.make_mt_envs, names[k], seed=seed + k,
                              num_tasks=len(names), env_id=k, use_one_hot=False, **common)
            for k in env_tasks
        ]
        bench = "custom"
    else:
        raise ValueError(f"unknown Meta-World benchmark {name!r}")
    if not env_tasks or min(env_tasks) < 0 or max(env_tasks) >= len(names):
        raise ValueError(f"env_tasks={env_tasks} must be tasks in [0, {len(names)})")
    return vec_cls(fns, autoreset_mode=mode), names, bench


def _vec(env: gym.vector.VectorEnv) -> Any:
    """The Sync/AsyncVectorEnv methods (call, get_attr) that the VectorEnv type lacks."""
    return env


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


# ----------------------------------------------------------------------------------------------
# Registration: env.name = mt10 | mt25 | mt50 | metaworld (a custom task list in env.tasks)


def metaworld_task_lists() -> dict[str, list[str]]:
    """The MT10/MT25/MT50 task names in Meta-World's own order, and all v3 tasks."""
    from metaworld import env_dict

    return {
        "mt10": list(env_dict.MT10_V3.keys()),
        "mt25": list(env_dict.MT25_V3.keys()),
        "mt50": list(env_dict.MT50_V3.keys()),
        "all": list(env_dict.ALL_V3_ENVIRONMENTS.keys()),
    }


def _check_metaworld(cfg: Any) -> None:
    from mtrl.errors import ConfigError

    if cfg.envs_per_task != 1:
        raise ConfigError(
            f"env.envs_per_task={cfg.envs_per_task} is not supported for Meta-World "
            "(one env per task, as in the benchmark); allowed: 1"
        )
    if cfg.vector_strategy not in ("sync", "async"):
        raise ConfigError(f"env.vector_strategy={cfg.vector_strategy!r} is not valid; "
                          "allowed: sync, async")
    if cfg.name != "metaworld":
        return
    valid = metaworld_task_lists()["all"]
    if not cfg.tasks:
        raise ConfigError(
            "env.tasks is empty; env.name='metaworld' needs a list of Meta-World v3 task "
            f"names, e.g. --env.tasks reach-v3,push-v3. Valid names: {', '.join(valid)}"
        )
    bad = [t for t in cfg.tasks if t not in valid]
    if bad:
        raise ConfigError(f"env.tasks contains unknown Meta-World task(s) {bad}; valid names: "
                          + ", ".join(valid))
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError(f"env.tasks={cfg.tasks} lists a task twice")


def _build_metaworld(cfg: Any, *, seed: int, evaluation: bool = False, render: bool = False,
                     tasks: list[int] | None = None) -> MetaWorldMultiTaskEnv:
    return make_metaworld_env(cfg.name, cfg.tasks, seed=seed,
                              vector_strategy=cfg.vector_strategy, evaluation=evaluation,
                              render=render, env_tasks=tasks)


for _name in _STANDARD:
    register_env(_name, _build_metaworld,
                 task_names=lambda cfg: metaworld_task_lists()[cfg.name],
                 check=_check_metaworld, uses=("vector_strategy",), task_subsets=True)
register_env("metaworld", _build_metaworld, task_names=lambda cfg: list(cfg.tasks),
             check=_check_metaworld, uses=("tasks", "vector_strategy"), task_subsets=True)
