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
sweep can be stopped and continued. With ``--work-dir DIR`` a run itself is resumable: both
sides save their whole training state at every evaluation (mtrl its own checkpoint with the
replay buffer; SB3 its networks, optimizers, temperature, replay buffer and generator states,
in files read back without unpickling), and a run started again continues from its last save;
the result records the steps it resumed at (``resumed_at``). Evaluations fall on episode
boundaries (Meta-World episodes are 500 steps), so a resumed run differs from an uninterrupted
one only in the random numbers of the episodes after the resume. A finished run's directory is
deleted once its result is in ``--json``. Prints the success curves per seed, their means over seeds
and the verdict: mtrl's mean success minus SB3's at the final budget and averaged over the
curve (the acceptance asks for ≥ −0.1, i.e. within one episode in ten).

Examples (2-core machine; ~8 min per single-task side at 20k steps with ``--jobs 2``)::

    python benchmarks/sac_vs_sb3_learning.py --task drawer-close-v3 --steps 30000 --seeds 0 1 2
    python benchmarks/sac_vs_sb3_learning.py --task mt10 --steps 200000 --warmup 10000 \
        --eval-every 50000 --seeds 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import re
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
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


def job_dir(work_dir: Path, job: Job) -> Path:
    """The directory of ``job``'s resumable state under ``work_dir`` (its key, made a name)."""
    return work_dir / re.sub(r"[^A-Za-z0-9._=-]", "_", job.key())


def _env_config(task: str) -> Any:
    from mtrl.config import EnvConfig

    if task in STANDARD:
        return EnvConfig(name=task)
    return EnvConfig(name="metaworld", tasks=[task])


Curve = dict[int, tuple[float, float, dict[str, float]]]
"""env step → (mean success, mean return, success per task)."""


def _run_mtrl(job: Job, run_dir: Path, resumable: bool) -> tuple[Curve, list[int], float]:
    """Train and evaluate ``job`` in ``run_dir``; with ``resumable``, checkpoint at every
    evaluation and continue from the last checkpoint in ``run_dir`` if there is one. Returns the
    curve, the env steps the run resumed at (the ``resumes`` of its metadata) and its training
    seconds over all its processes."""
    from mtrl import config as C
    from mtrl.presets import get_preset
    from mtrl.rundir import RunDir
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
    cfg.checkpoint.every = job.eval_every if resumable else 0
    cfg.checkpoint.keep_last = 1
    cfg.log.progress_bar = False
    cfg.log.every = max(1000, job.eval_every // 5)
    for item in job.overrides:  # an elimination experiment: one setting changed
        key, _, value = item.partition("=")
        C.set_override(cfg, key, value)
    run = RunDir(run_dir)
    last = run.checkpoints().latest() if resumable else None
    if last is None and run_dir.exists():
        # Stopped before its first checkpoint: keep what it wrote, start a new run beside it.
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.no-checkpoint-{time.time_ns()}"))
    result = train(cfg, run_dir, resume=last is not None)
    resumes = [int(r["env_steps"]) for r in run.metadata().get("resumes", [])]
    return _mtrl_curve(run_dir), resumes, result.seconds


def _mtrl_curve(run_dir: Path) -> Curve:
    """The evaluations an mtrl run has written so far."""
    from mtrl.rundir import RunDir

    curve: Curve = {}
    for f in sorted(RunDir(run_dir).eval_dir.glob("step_*.json")):
        d = json.loads(f.read_text())
        per_task = {t: float(v["success"]) for t, v in d["tasks"].items()}
        curve[int(d["step"])] = (float(d["success_mean"]), float(d["return_mean"]), per_task)
    return curve


def progress(work_dir: Path, job: Job) -> dict[int, float]:
    """Mean success at each evaluation so far of ``job``'s unfinished run under ``work_dir``
    (empty if it has none): what a multi-hour job has shown before it ends."""
    d = job_dir(work_dir, job)
    try:
        if job.side == "mtrl":
            curve = _mtrl_curve(d / "run")
        else:
            latest = _SB3State(d / "sb3").latest()
            if latest is None:
                return {}
            curve = _SB3State.read(latest)[1]
    except (OSError, ValueError, KeyError, TypeError, RuntimeError,
            pickle.UnpicklingError) as e:
        print(f"warning: progress of {d} unreadable ({type(e).__name__}: {e})",
              file=sys.stderr)
        return {}
    return {k: float(v[0]) for k, v in sorted(curve.items())}


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
                # SB3 seeds its env once at construction (``seed()``: the run's seed, as
                # before) and again when a saved run resumes.
                first = self._seeds[0] if self._seeds else None
                obs, _ = self.env.reset(seed=seed if first is None else first)
                self._reset_seeds()
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


_SB3_BUFFER = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class _SB3State:
    """A resumable SB3 SAC run in ``directory``: ``ckpt-<step>/`` holds ``state.pt`` (networks,
    optimizers, temperature, counters, generator states and the curve so far, all tensors and
    plain values, read with ``torch.load(weights_only=True)``) and ``replay.npz`` (the filled
    part of the replay buffer, ``allow_pickle=False``); ``latest`` names the newest complete
    one and is replaced atomically after it is written, then the older one is removed."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def latest(self) -> Path | None:
        try:
            name = (self.dir / "latest").read_text().strip()
        except FileNotFoundError:
            return None
        path = self.dir / name
        if not re.fullmatch(r"ckpt-\d+", name) or not (path / "state.pt").is_file():
            raise SystemExit(f"sac_vs_sb3_learning: {self.dir / 'latest'} names no saved "
                             f"state ({name[:80]!r}); move {self.dir} away to start afresh")
        return path

    def save(self, model: Any, curve: Curve, resumed_at: list[int], seconds: float) -> None:
        import torch

        from mtrl.seeding import rng_state

        step = int(model.num_timesteps)
        tmp = self.dir / f".ckpt-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # a save this process's predecessor left half
        tmp.mkdir(parents=True)
        buf = model.replay_buffer
        n = buf.buffer_size if buf.full else buf.pos
        np.savez(tmp / "replay.npz", pos=np.int64(buf.pos), full=np.bool_(buf.full),
                 **{k: getattr(buf, k)[:n] for k in _SB3_BUFFER})
        torch.save({
            "step": step, "n_updates": int(model._n_updates),
            "episode_num": int(model._episode_num),
            "policy": model.policy.state_dict(),
            "actor_opt": model.actor.optimizer.state_dict(),
            "critic_opt": model.critic.optimizer.state_dict(),
            "log_ent_coef": model.log_ent_coef.detach().clone(),
            "ent_opt": model.ent_coef_optimizer.state_dict(),
            "rng": rng_state(),
            "curve": json.dumps({str(k): v for k, v in curve.items()}),
            "resumed_at": list(resumed_at),
            "seconds": float(seconds),
        }, tmp / "state.pt")
        final = self.dir / f"ckpt-{step}"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        previous = self.latest()
        (self.dir / "latest.tmp").write_text(final.name)
        os.replace(self.dir / "latest.tmp", self.dir / "latest")
        if previous is not None and previous != final:
            shutil.rmtree(previous)

    @staticmethod
    def read(path: Path) -> tuple[dict[str, Any], Curve]:
        """The saved state at ``path`` and the curve it holds."""
        import torch

        st = torch.load(path / "state.pt", weights_only=True)
        curve = {int(k): (v[0], v[1], v[2]) for k, v in json.loads(st["curve"]).items()}
        return st, curve

    def load(self, model: Any, path: Path) -> tuple[Curve, list[int], float]:
        """Restore ``model`` (built as for a fresh run) from ``path``; the curve so far, the
        steps of earlier resumes and the training seconds up to the save."""
        import torch

        from mtrl.seeding import set_rng_state

        try:
            st, curve = self.read(path)
            with np.load(path / "replay.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in (*_SB3_BUFFER, "pos", "full")}
            model.policy.load_state_dict(st["policy"])
            model.actor.optimizer.load_state_dict(st["actor_opt"])
            model.critic.optimizer.load_state_dict(st["critic_opt"])
            with torch.no_grad():
                model.log_ent_coef.copy_(st["log_ent_coef"])
            model.ent_coef_optimizer.load_state_dict(st["ent_opt"])
            buf = model.replay_buffer
            for k in _SB3_BUFFER:
                getattr(buf, k)[:len(arrays[k])] = arrays[k]
            buf.pos, buf.full = int(arrays["pos"]), bool(arrays["full"])
            model.num_timesteps = int(st["step"])
            model._n_updates = int(st["n_updates"])
            model._episode_num = int(st["episode_num"])
            set_rng_state(st["rng"])
            return curve, [int(s) for s in st["resumed_at"]], float(st.get("seconds", 0.0))
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError,
                AttributeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise SystemExit(f"sac_vs_sb3_learning: cannot resume from {path}: "
                             f"{type(e).__name__}: {' '.join(str(e).split())[:200]}; move it "
                             "away to start afresh") from None


def _run_sb3(job: Job, state_dir: Path | None) -> tuple[Curve, list[int], float]:
    """Train and evaluate ``job`` with stable-baselines3; with ``state_dir``, save the run at
    every evaluation and continue from the last save there. Returns the curve, the env steps
    the run resumed at and its training seconds over all its processes."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/* ids)
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from mtrl.envs import make_env
    from mtrl.envs.metaworld import EPISODE_LENGTH, REWARD_VERSION
    from mtrl.evaluation import evaluate
    from mtrl.logging import format_duration
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
    resumed_at: list[int] = []
    seconds_before = 0.0
    saver = _SB3State(state_dir) if state_dir is not None else None
    last = saver.latest() if saver is not None else None
    if saver is not None and last is not None:
        curve, resumed_at, seconds_before = saver.load(model, last)
        resumed_at.append(model.num_timesteps)
        # Start new episodes (the save was at an episode boundary) from seeds of their own.
        model.env.seed(derive_seed(job.seed, f"resume{model.num_timesteps}") % 2**31)
        print(f"sb3 {job.task} seed {job.seed}: resumed at step {model.num_timesteps:,}",
              flush=True)

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
        # SB3 logs nothing of its own here: the benchmark prints its evaluations and progress.
        print(f"sb3 {job.task} seed {job.seed}: step {step:,} success {r.success_mean:.2f}",
              flush=True)

    # Between evaluations, 5 progress lines per evaluation period (mtrl logs every
    # max(1000, eval_every // 5) steps: the same at the budgets of the learning checks).
    report_every = max(1, job.eval_every // 5)
    steps_at_start = model.num_timesteps

    def crossed(n: int, every: int) -> bool:
        return n // every != (n - n_envs) // every

    class Callback(BaseCallback):
        save_due = False

        def _on_step(self) -> bool:
            n = self.num_timesteps
            if crossed(n, job.eval_every) and n < job.steps:
                run_eval(n)
                self.save_due = saver is not None
            elif crossed(n, report_every) and n < job.steps:
                took = time.perf_counter() - t_start
                sps = (n - steps_at_start) / max(took, 1e-9)
                print(f"sb3 {job.task} seed {job.seed}: step {n:,}/{job.steps:,}  "
                      f"{sps:.0f} steps/s  ETA {format_duration((job.steps - n) / sps)}",
                      flush=True)
            return True

        def _on_rollout_start(self) -> None:
            # After the step that evaluated: its transition is stored and its update done.
            if self.save_due and saver is not None:
                saver.save(model, curve, resumed_at,
                           seconds_before + time.perf_counter() - t_start)
                self.save_due = False

    t_start = time.perf_counter()
    model.learn(job.steps - model.num_timesteps, callback=Callback(),
                reset_num_timesteps=not resumed_at)
    run_eval(model.num_timesteps)
    eval_env.close()
    env.close()
    return curve, resumed_at, seconds_before + time.perf_counter() - t_start


def run_job(job: Job, work_dir: Path | None = None) -> dict[str, Any]:
    """One training run (its own process); returns its evaluation curve. With ``work_dir`` the
    run saves its state in :func:`job_dir` at every evaluation and continues from there when
    started again (one process at a time: the directory is locked)."""
    import torch

    from mtrl.rundir import ResumeError, RunLock

    torch.set_num_threads(job.threads)
    if job.side not in ("mtrl", "sb3"):
        raise ValueError(job.side)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            d = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            d = job_dir(work_dir, job)
            try:
                stack.enter_context(RunLock(d))
            except ResumeError as e:  # in use by another process, or not a directory
                raise SystemExit(f"sac_vs_sb3_learning: {e}") from None
        if job.side == "mtrl":
            curve, resumed_at, seconds = _run_mtrl(job, d / "run",
                                                   resumable=work_dir is not None)
        else:
            curve, resumed_at, seconds = _run_sb3(job, d / "sb3" if work_dir is not None
                                                  else None)
    return {
        "key": job.key(),
        "job": asdict(job),
        "success": {str(k): v[0] for k, v in sorted(curve.items())},
        "return": {str(k): v[1] for k, v in sorted(curve.items())},
        "task_success": {str(k): v[2] for k, v in sorted(curve.items())},
        # Training and evaluation, over all of the run's processes (each up to its last save).
        "minutes": seconds / 60,
        "torch": torch.__version__,
        **({"resumed_at": resumed_at} if resumed_at else {}),
    }


def run_jobs(todo: list[Job], jobs: int, done: Any, work_dir: Path | None = None) -> None:
    """Run ``todo``, ``jobs`` processes at once (spawned); ``done(job, result)`` as each ends,
    after printing its curve (it is expected to store the result: the run's directory under
    ``work_dir`` is deleted after it returns)."""
    if not todo:
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as ex:
        futures = {ex.submit(run_job, j, work_dir): j for j in todo}
        for fut in as_completed(futures):
            j = futures[fut]
            res = fut.result()
            curve = " ".join(f"{k}:{v:.2f}" for k, v in res["success"].items())
            resumed = (f", resumed at {', '.join(map(str, res['resumed_at']))}"
                       if res.get("resumed_at") else "")
            print(f"{j.side} {j.task} seed {j.seed}: {curve} ({res['minutes']:.1f} min"
                  f"{resumed})", flush=True)
            done(j, res)
            if work_dir is not None:
                shutil.rmtree(job_dir(work_dir, j), ignore_errors=True)


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
    p.add_argument("--work-dir", type=Path, default=None,
                   help="save each run's state here at every evaluation and continue from it "
                        "when started again (default: runs are not resumable)")
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

    run_jobs(todo, args.jobs, done_one, args.work_dir)
    summary = summarize([r for r in results if r["key"] in wanted], args.task)
    save()
    print_summary(summary)
    return 0 if summary.get("pass", True) else 1


if __name__ == "__main__":
    sys.exit(main())
