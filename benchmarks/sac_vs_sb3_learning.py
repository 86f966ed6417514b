"""Does mtrl's MT-SAC learn Meta-World as well as stable-baselines3's SAC on the same work?

Both sides train on the same Meta-World v3 env (Meta-World's own constructors, the same seed,
hence the same 50 goals), with the same hyperparameters (400-400 ReLU actor and twin critics,
Adam lr 3e-4, γ 0.99, τ 0.005, learned temperature from 1.0 with target entropy −|A|, uniform
random warm-up, one update per vector step), and are evaluated by the *same function*,
:func:`mtrl.evaluation.evaluate`, on the same evaluation env (deterministic policy, one episode
per goal, success if the flag is ever 1) at the same env steps.

* a single task (``--task drawer-close-v3``): mtrl runs ``mtrl train mt10-mtsac --env.name
  metaworld --env.tasks TASK`` (one env, batch ``--batch-size``, default 256); SB3 runs
  ``SAC("MlpPolicy", gym.make("Meta-World/MT1", env_name=TASK, seed=seed))``;
* ``--task mt10``: mtrl runs the ``mt10-mtsac`` preset (task id as a one-hot inside the
  networks, batches stratified by task); SB3 runs the same 10 envs with the one-hot appended to
  the observation (``use_one_hot=True``), one update per vector step of 10 envs, batch 1280
  drawn uniformly from its single buffer.

Every (side, seed) is its own process; ``--jobs`` of them run at once, each with
``cores // jobs`` torch threads. Results are appended to ``--json`` as they finish, and runs
already in that file (same task, side, seed, steps and settings) are not repeated, so a long
sweep can be stopped and continued. Prints the success curves per seed, their means over seeds
and the verdict: mtrl's mean success minus SB3's at the final budget and averaged over the
curve (the acceptance asks for ≥ −0.1, i.e. within one episode in ten).

Examples (2-core machine; ~8 min per single-task side at 20k steps with ``--jobs 2``)::

    python benchmarks/sac_vs_sb3_learning.py --task drawer-close-v3 --steps 30000 --seeds 0 1 2
    python benchmarks/sac_vs_sb3_learning.py --task mt10 --steps 200000 --warmup 10000 \
        --eval-every 50000 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

STANDARD = {"mt10": "MT10"}


@dataclass(frozen=True)
class Job:
    side: str  # mtrl | sb3
    task: str  # a Meta-World task name, or mt10
    seed: int
    steps: int
    warmup: int
    batch_size: int
    eval_every: int
    eval_episodes: int
    threads: int
    overrides: tuple[str, ...] = ()  # mtrl side: FIELD=VALUE config overrides (--mtrl-set)

    def key(self) -> str:
        extra = "".join(f"|{o}" for o in self.overrides) if self.side == "mtrl" else ""
        return (f"{self.side}|{self.task}|s{self.seed}|n{self.steps}|w{self.warmup}|"
                f"b{self.batch_size}|e{self.eval_every}x{self.eval_episodes}{extra}")


def _env_config(task: str) -> Any:
    from mtrl.config import EnvConfig

    if task in STANDARD:
        return EnvConfig(name=task)
    return EnvConfig(name="metaworld", tasks=[task])


Curve = dict[int, tuple[float, float, dict[str, float]]]
"""env step → (mean success, mean return, success per task)."""


def _run_mtrl(job: Job, run_dir: Path) -> Curve:
    from mtrl import config as C
    from mtrl.presets import get_preset
    from mtrl.runner import train

    cfg = get_preset("mt10-mtsac")
    cfg.seed = job.seed
    cfg.device = "cpu"
    cfg.env = _env_config(job.task)
    cfg.agent.batch_size = job.batch_size
    cfg.total_steps = job.steps
    cfg.warmup_steps = job.warmup
    cfg.eval.every = job.eval_every
    cfg.eval.episodes_per_task = job.eval_episodes
    cfg.eval.final = True
    cfg.eval.at_start = False  # the SB3 side has no step-0 evaluation
    cfg.checkpoint.every = 0
    cfg.log.progress_bar = False
    cfg.log.every = max(1000, job.eval_every // 5)
    for item in job.overrides:  # an elimination experiment: one setting changed
        key, _, value = item.partition("=")
        C.set_override(cfg, key, value)
    train(cfg, run_dir)
    curve: Curve = {}
    for f in sorted((run_dir / "eval").glob("step_*.json")):
        d = json.loads(f.read_text())
        per_task = {t: float(v["success"]) for t, v in d["tasks"].items()}
        curve[int(d["step"])] = (float(d["success_mean"]), float(d["return_mean"]), per_task)
    return curve


class _GymVecForSB3:
    """A stable-baselines3 ``VecEnv`` over a gymnasium vector env with same-step autoreset
    (SB3's ``terminal_observation`` / ``TimeLimit.truncated`` infos)."""

    def __new__(cls, env: Any, seed: int) -> Any:
        from stable_baselines3.common.vec_env.base_vec_env import VecEnv

        class _Impl(VecEnv):
            def __init__(self) -> None:
                self.env = env
                self._actions: np.ndarray | None = None
                super().__init__(env.num_envs, env.single_observation_space,
                                 env.single_action_space)

            def reset(self) -> np.ndarray:
                obs, _ = self.env.reset(seed=seed)
                return np.asarray(obs, dtype=np.float32)

            def step_async(self, actions: np.ndarray) -> None:
                self._actions = np.asarray(actions, dtype=np.float32)

            def step_wait(self) -> Any:
                obs, rew, term, trunc, info = self.env.step(self._actions)
                dones = np.asarray(term) | np.asarray(trunc)
                infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
                for i in np.flatnonzero(dones):
                    infos[i]["terminal_observation"] = np.asarray(info["final_obs"][i],
                                                                  dtype=np.float32)
                    infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
                return np.asarray(obs, dtype=np.float32), np.asarray(rew, np.float32), dones, \
                    infos

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

        return _Impl()


def _run_sb3(job: Job) -> Curve:
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/* ids)
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from mtrl.envs import make_env
    from mtrl.envs.metaworld import EPISODE_LENGTH, REWARD_VERSION
    from mtrl.evaluation import evaluate
    from mtrl.seeding import derive_seed

    common = {"reward_function_version": REWARD_VERSION, "max_episode_steps": EPISODE_LENGTH}
    if job.task in STANDARD:
        vec = gym.make_vec(f"Meta-World/{STANDARD[job.task]}", vector_strategy="sync",
                           seed=job.seed, use_one_hot=True, **common)
        env: Any = _GymVecForSB3(vec, job.seed)
        num_tasks = vec.num_envs
    else:
        env = gym.make("Meta-World/MT1", env_name=job.task, seed=job.seed, **common)
        num_tasks = 0  # no one-hot: one task
    eval_env = make_env(_env_config(job.task), seed=job.seed, evaluation=True)
    model = SAC("MlpPolicy", env, batch_size=job.batch_size, learning_starts=job.warmup,
                policy_kwargs={"net_arch": [400, 400]}, seed=job.seed, device="cpu",
                buffer_size=1_000_000)
    n_envs = model.n_envs
    curve: Curve = {}

    class Adapter:
        def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = True
                ) -> np.ndarray:
            if num_tasks:
                obs = np.concatenate([obs, np.eye(num_tasks, dtype=np.float32)[task_id]], 1)
            return model.predict(obs, deterministic=deterministic)[0]

    def run_eval(step: int) -> None:
        r = evaluate(Adapter(), eval_env, job.eval_episodes,
                     seed=derive_seed(job.seed, "eval"))
        curve[step] = (r.success_mean, r.return_mean, {t: r.success[t] for t in r.task_names})
        # The SB3 side logs nothing else: show that a long run is progressing.
        print(f"sb3 {job.task} seed {job.seed}: step {step:,} success {r.success_mean:.2f}",
              flush=True)

    class Callback(BaseCallback):
        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n // job.eval_every != (n - n_envs) // job.eval_every and n < job.steps:
                run_eval(n)
            return True

    model.learn(job.steps, callback=Callback())
    run_eval(model.num_timesteps)
    eval_env.close()
    env.close()
    return curve


def run_job(job: Job) -> dict[str, Any]:
    """One training run (its own process); returns its evaluation curve."""
    import torch

    torch.set_num_threads(job.threads)
    t0 = time.perf_counter()
    if job.side == "mtrl":
        with tempfile.TemporaryDirectory() as d:
            curve = _run_mtrl(job, Path(d) / "run")
    elif job.side == "sb3":
        curve = _run_sb3(job)
    else:
        raise ValueError(job.side)
    return {
        "key": job.key(),
        "job": asdict(job),
        "success": {str(k): v[0] for k, v in sorted(curve.items())},
        "return": {str(k): v[1] for k, v in sorted(curve.items())},
        "task_success": {str(k): v[2] for k, v in sorted(curve.items())},
        "minutes": (time.perf_counter() - t0) / 60,
        "torch": torch.__version__,
    }


def run_jobs(todo: list[Job], jobs: int, done: Any) -> None:
    """Run ``todo``, ``jobs`` processes at once (spawned); ``done(job, result)`` as each ends,
    after printing its curve."""
    if not todo:
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as ex:
        futures = {ex.submit(run_job, j): j for j in todo}
        for fut in as_completed(futures):
            j = futures[fut]
            res = fut.result()
            curve = " ".join(f"{k}:{v:.2f}" for k, v in res["success"].items())
            print(f"{j.side} {j.task} seed {j.seed}: {curve} ({res['minutes']:.1f} min)",
                  flush=True)
            done(j, res)


def summarize(results: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """Mean success over seeds per eval step and side; mtrl − SB3 at the final step and
    averaged over the eval steps both sides have."""
    by_side: dict[str, dict[int, dict[int, float]]] = {}
    for r in results:
        if r["job"]["task"] != task:
            continue
        curves = by_side.setdefault(r["job"]["side"], {})
        curves[r["job"]["seed"]] = {int(k): v for k, v in r["success"].items()}
    out: dict[str, Any] = {"task": task, "sides": {}}
    for side, curves in sorted(by_side.items()):
        steps = sorted(set.intersection(*(set(c) for c in curves.values())))
        means = {s: statistics.fmean(c[s] for c in curves.values()) for s in steps}
        out["sides"][side] = {"seeds": sorted(curves), "steps": steps, "mean": means,
                              "per_seed": curves}
    if {"mtrl", "sb3"} <= set(out["sides"]):
        m, s = out["sides"]["mtrl"], out["sides"]["sb3"]
        common = sorted(set(m["steps"]) & set(s["steps"]))
        seeds = sorted(set(m["seeds"]) & set(s["seeds"]))
        if common and seeds:
            final = common[-1]
            d_final = statistics.fmean(m["per_seed"][k][final] - s["per_seed"][k][final]
                                       for k in seeds)
            d_curve = statistics.fmean(
                statistics.fmean(m["per_seed"][k][t] - s["per_seed"][k][t] for t in common)
                for k in seeds)
            out["mtrl_minus_sb3_final"] = d_final
            out["mtrl_minus_sb3_curve"] = d_curve

            def se(values_m: list[float], values_s: list[float]) -> float:
                """Standard error of a difference of two means over independent seeds."""
                n = len(values_m)
                if n < 2:
                    return float("nan")
                return math.sqrt(statistics.variance(values_m) / n
                                 + statistics.variance(values_s) / n)

            out["se_final"] = se([m["per_seed"][k][final] for k in seeds],
                                 [s["per_seed"][k][final] for k in seeds])
            out["se_curve"] = se(
                [statistics.fmean(m["per_seed"][k][t] for t in common) for k in seeds],
                [statistics.fmean(s["per_seed"][k][t] for t in common) for k in seeds])
            out["paired_seeds"] = seeds
            out["final_step"] = final
            out["pass"] = d_final >= -0.1 and d_curve >= -0.1
    return out


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n== {summary['task']}: eval success (mtrl.evaluation.evaluate, deterministic, "
          "one episode per goal)")
    for side, s in summary["sides"].items():
        head = " ".join(f"{t:>7d}" for t in s["steps"])
        print(f"{side:>5} seed  {head}")
        for seed in s["seeds"]:
            row = " ".join(f"{s['per_seed'][seed][t]:7.2f}" for t in s["steps"])
            print(f"{'':>5} {seed:>4}  {row}")
        row = " ".join(f"{s['mean'][t]:7.2f}" for t in s["steps"])
        print(f"{'':>5} mean  {row}")
    if "pass" in summary:
        print(f"mtrl − SB3 over seeds {summary['paired_seeds']}: "
              f"{summary['mtrl_minus_sb3_final']:+.2f} at {summary['final_step']} steps, "
              f"{summary['mtrl_minus_sb3_curve']:+.2f} averaged over the curve -> "
              f"{'PASS' if summary['pass'] else 'FAIL'} (>= -0.10)")
        print(f"standard errors over seeds (the libraries draw different random numbers, so "
              f"seeds are independent runs): ±{summary['se_final']:.2f} at the final step, "
              f"±{summary['se_curve']:.2f} averaged over the curve")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="drawer-close-v3",
                   help="a Meta-World v3 task (one env) or mt10")
    p.add_argument("--steps", type=int, default=30_000, help="env steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sides", nargs="+", default=["mtrl", "sb3"], choices=["mtrl", "sb3"])
    p.add_argument("--warmup", type=int, default=2000, help="random warm-up env steps")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 256 for one task, 1280 for mt10")
    p.add_argument("--eval-every", type=int, default=5000)
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per task")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (processes)")
    p.add_argument("--mtrl-set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config overrides of the mtrl side (e.g. agent.sac.log_prob_guard=1e-6"
                        "), part of the run's key: write such runs to their own --json")
    p.add_argument("--json", type=Path, default=None,
                   help="append results here; runs already in it are skipped")
    args = p.parse_args(argv)
    if args.task not in STANDARD:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if args.task not in ALL_V3_ENVIRONMENTS:
            p.error(f"--task {args.task!r} is neither mt10 nor a Meta-World v3 task")
    batch = args.batch_size or (1280 if args.task in STANDARD else 256)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    jobs = [Job(side, args.task, seed, args.steps, args.warmup, batch, args.eval_every,
                args.eval_episodes, threads, tuple(args.mtrl_set))
            for seed in args.seeds for side in args.sides]

    results: list[dict[str, Any]] = []
    if args.json is not None and args.json.exists():
        results = json.loads(args.json.read_text())["runs"]
    done = {r["key"] for r in results}
    todo = [j for j in jobs if j.key() not in done]
    wanted = {j.key() for j in jobs}
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already in {args.json}; "
          f"running {len(todo)} with {args.jobs} at once, {threads} torch thread(s) each",
          flush=True)

    def save() -> None:
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(
                {"runs": results, "summary": summarize(
                    [r for r in results if r["key"] in wanted], args.task)}, indent=1))

    def done_one(j: Job, res: dict[str, Any]) -> None:
        results.append(res)
        save()

    run_jobs(todo, args.jobs, done_one)
    summary = summarize([r for r in results if r["key"] in wanted], args.task)
    save()
    print_summary(summary)
    return 0 if summary.get("pass", True) else 1


if __name__ == "__main__":
    sys.exit(main())
