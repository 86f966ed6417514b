"""The training loop: collect → update → log → evaluate → checkpoint.

:func:`train` runs a config into a run directory (or resumes one). The loop owns no algorithm:
it steps a :class:`~mtrl.envs.MultiTaskVectorEnv` and calls ``agent.update`` on task-stratified
batches, and handles logging, evaluation, checkpoints, Ctrl-C and non-finite losses. One
iteration of the loop is

* off-policy agents (mtsac): one vector-env step into the replay buffer, then
  ``updates_per_step`` updates on sampled batches (after the warm-up);
* on-policy agents (mta2c): one rollout of ``agent.n_steps`` vector-env steps into the
  device-resident :class:`~mtrl.data.rollout.RolloutStorage`, then one update on it.

Logging, evaluation and checkpoints happen between iterations, when the env-step counter
crosses their period.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mtrl import config as C
from mtrl.agents import MTA2C, MTSAC, Distiller, build_agent
from mtrl.checkpoint import CheckpointError, CheckpointManager
from mtrl.collect import Transitions, VectorCollector
from mtrl.config import ConfigError, TrainConfig
from mtrl.data.replay import Batch, MultiTaskReplayBuffer
from mtrl.data.rollout import RolloutStorage
from mtrl.data.states import StateBuffer
from mtrl.envs import MultiTaskVectorEnv, make_env
from mtrl.evaluation import (
    EvalResult,
    RunEvaluation,
    evaluate,
    extra_policies,
    protocol_text,
)
from mtrl.logging import RunLogger, collect_metadata, flatten, tile_matrices, write_json
from mtrl.rundir import (  # noqa: F401  (re-exported: the loop's errors and resume checks)
    ResumeError,
    RunDir,
    check_resume_compatible,
    load_run_config,
    resolve_device,
)
from mtrl.seeding import derive_seed, rng_state, seed_everything, set_rng_state


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stopped without saving the bad state."""


@dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    updates: int
    interrupted: bool
    last_checkpoint: Path | None
    final_eval: EvalResult | None


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.preset or cfg.env.name}-s{cfg.seed}-{stamp}"


class _Metrics:
    """Accumulates the agent's per-update scalars on the device (no host sync per update) and
    remembers, per metric, the first update at which it was not finite."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.keys: list[str] | None = None
        self.sum: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None
        self.count = 0
        self.update_index = torch.zeros((), dtype=torch.long, device=device)

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        if self.keys is None:
            self.keys = list(metrics)
            self.sum = torch.zeros(len(self.keys), device=self.device)
            self.first_bad = torch.full((len(self.keys),), -1, dtype=torch.long,
                                        device=self.device)
        values = torch.stack([metrics[k].float() for k in self.keys])
        bad = ~torch.isfinite(values)
        assert self.sum is not None and self.first_bad is not None
        self.first_bad = torch.where(bad & (self.first_bad < 0), self.update_index, self.first_bad)
        self.sum += values
        self.update_index += 1
        self.count += 1

    def nonfinite(self) -> tuple[str, int] | None:
        if self.first_bad is None or self.keys is None:
            return None
        fb = self.first_bad.cpu().numpy()
        bad = np.flatnonzero(fb >= 0)
        if bad.size == 0:
            return None
        k = bad[np.argmin(fb[bad])]
        return self.keys[k], int(fb[k])

    def pop_means(self) -> dict[str, float]:
        if not self.count or self.keys is None or self.sum is None:
            return {}
        means = (self.sum / self.count).cpu().tolist()
        self.sum.zero_()
        self.count = 0
        return dict(zip(self.keys, means, strict=True))


class Trainer:
    """Builds everything a config describes and runs the loop. Use :func:`train`."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        checkpoint: Path | None = None,
    ) -> None:
        C.validate(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.ckpts = CheckpointManager(self.run_dir / "checkpoints", cfg.checkpoint.keep_last)
        self.resume = resume

        resume_state: dict[str, Any] | None = None
        replay_path: Path | None = None
        self.resumed_from: Path | None = None
        if resume:
            resume_state, replay_path, resumed = self._read_resume(checkpoint)
            self.resumed_from = resumed
        else:
            if self.ckpts.latest() is not None or (self.run_dir / "config.yaml").exists():
                raise ResumeError(
                    f"run directory {self.run_dir} already holds a run; resume it with "
                    f"`mtrl train --resume {self.run_dir}` or choose another --run-dir"
                )
            self.resumed_from = None

        seed_everything(cfg.seed)
        self.task_names = C.task_names(cfg.env)
        self.teacher_specs: dict[str, str] = {}
        if cfg.agent.name == "distill":
            self.teacher_specs = _check_teacher_paths(cfg, self.task_names)
        self.env: MultiTaskVectorEnv = make_env(cfg.env, seed=cfg.seed)
        self.collector = VectorCollector(self.env)
        self.eval_env: MultiTaskVectorEnv | None = None
        if cfg.eval.every > 0 or cfg.eval.final:
            self.eval_env = make_env(cfg.env, seed=cfg.seed, evaluation=True)
        obs_space = self.env.single_observation_space
        act_space = self.env.single_action_space
        self.on_policy = cfg.agent.name in C.ON_POLICY_AGENTS
        if obs_space.shape is None or (
            cfg.agent.name in C.SAC_AGENTS and not isinstance(act_space, gym.spaces.Box)
        ):
            raise ConfigError(f"env.name={cfg.env.name!r} has non-Box actions; "
                              f"{cfg.agent.name} needs Box")
        self.obs_shape = tuple(obs_space.shape)
        self.action_dim = int(np.prod(act_space.shape or ()))
        self.num_tasks = len(self.task_names)
        self.num_envs = self.env.num_envs
        # Atari-style benchmarks have no success flag: log returns (and human-normalized
        # scores) instead of success rates.
        self.has_success = bool(self.env.benchmark.get("has_success", True))
        self.is_atari = self.env.benchmark.get("name") == "atari"

        self.agent = build_agent(
            cfg.agent,
            obs_space=obs_space,
            action_space=act_space,
            num_tasks=self.num_tasks,
            device=self.device,
        )
        if isinstance(self.agent, Distiller):
            self._attach_teachers(obs_space, act_space)
        self.buffer: MultiTaskReplayBuffer | StateBuffer | None = None
        self.storage: RolloutStorage | None = None
        if self.on_policy:
            discrete = isinstance(act_space, gym.spaces.Discrete)
            self.storage = RolloutStorage(
                cfg.agent.n_steps,
                self.env.task_ids,
                self.obs_shape,
                obs_dtype=torch.uint8 if obs_space.dtype == np.uint8 else torch.float32,
                action_shape=() if discrete else (self.action_dim,),
                discrete=discrete,
                device=self.device,
            )
        elif isinstance(self.agent, Distiller):
            # Distillation keeps states only, in the env's dtype (uint8 Atari frames).
            self.buffer = StateBuffer(
                self.num_tasks,
                cfg.replay.capacity,
                self.obs_shape,
                obs_dtype=torch.uint8 if obs_space.dtype == np.uint8 else torch.float32,
                device=self.device,
                seed=derive_seed(cfg.seed, "replay"),
            )
        else:
            self.buffer = MultiTaskReplayBuffer(
                self.num_tasks,
                cfg.replay.capacity,
                self.obs_shape,
                self.action_dim,
                device=self.device,
                seed=derive_seed(cfg.seed, "replay"),
            )
        self.last_returns = np.full(self.num_tasks, np.nan)
        self.warmup_rng = np.random.default_rng(derive_seed(cfg.seed, "warmup"))
        self.vec_step = 0
        self.updates = 0
        self.episodes = 0
        self.best_eval: float | None = None
        self.last_eval: EvalResult | None = None
        self.train_success = np.full(self.num_tasks, np.nan)
        if resume_state is not None:
            try:
                self._restore(resume_state, replay_path)
            except BaseException:
                self.close()
                raise

    def _attach_teachers(self, obs_space: gym.Space[Any], act_space: gym.Space[Any]) -> None:
        from mtrl.teachers import load_teacher

        assert isinstance(self.agent, Distiller)
        teachers = []
        try:
            for t in self.task_names:
                amap = None
                if self.env.benchmark.get("name") == "atari":
                    from mtrl.envs.atari import minimal_action_set

                    amap = minimal_action_set(t)
                teachers.append(load_teacher(self.teacher_specs[t], t, obs_space=obs_space,
                                             action_space=act_space, device=self.device,
                                             action_map=amap))
            self.agent.set_teachers(teachers)
        except (ValueError, ImportError) as e:
            self.close()
            raise ConfigError(f"agent.distill_teachers: {e}") from e

    # ------------------------------------------------------------------ resume
    def _read_resume(
        self, checkpoint: Path | None
    ) -> tuple[dict[str, Any], Path | None, Path]:
        try:
            ckpt = RunDir(self.run_dir).load_checkpoint(checkpoint)
        except CheckpointError as e:
            raise ResumeError(str(e)) from e
        if ckpt.replay_missing is not None:
            print(f"warning: replay buffer {ckpt.replay_missing} is gone (only the newest "
                  "checkpoint keeps one); resuming with an empty buffer", file=sys.stderr)
        return ckpt.state, ckpt.replay_path, ckpt.path

    def _restore(self, state: dict[str, Any], replay: Path | None) -> None:
        try:
            self.agent.load_state_dict(state["agent"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ResumeError(
                f"checkpoint {self.resumed_from} does not fit this run's networks: "
                f"{' '.join(str(e).split())[:300]}"
            ) from e
        if replay is not None and self.buffer is not None:
            try:
                self.buffer.load(replay)
            except ValueError as e:
                raise ResumeError(f"replay buffer of {self.resumed_from}: {e}") from e
        loop = state["loop"]
        self.vec_step = int(loop["vec_step"])
        self.updates = int(loop["updates"])
        self.episodes = int(loop["episodes"])
        self.best_eval = loop.get("best_eval")
        self.warmup_rng.bit_generator.state = state["warmup_rng"]
        set_rng_state(state["rng"])
        if state.get("collector") is not None:
            self.collector.load_state_dict(state["collector"])
        else:
            self.collector.reset()

    def _train_state(self) -> dict[str, Any]:
        collector_state = None
        try:
            collector_state = self.collector.state_dict()
        except Exception as e:  # e.g. async workers already gone after Ctrl-C
            print(f"warning: env state not saved ({e})", file=sys.stderr)
        state: dict[str, Any] = {
            "agent": self.agent.state_dict(),
            "loop": {
                "vec_step": self.vec_step,
                "env_steps": self.env_steps,
                "updates": self.updates,
                "episodes": self.episodes,
                "best_eval": self.best_eval,
            },
            "warmup_rng": self.warmup_rng.bit_generator.state,
            "rng": rng_state(),
            "collector": collector_state,
            "config": C.to_dict(self.cfg),
            "task_names": list(self.task_names),
        }
        return state

    @property
    def env_steps(self) -> int:
        return self.vec_step * self.num_envs

    # ------------------------------------------------------------------ loop
    def save_checkpoint(self, metrics: _Metrics) -> Path:
        bad = metrics.nonfinite()
        if bad is not None:
            self._raise_nonfinite(*bad)
        replay = (self.buffer.save
                  if self.buffer is not None and self.cfg.replay.save_with_checkpoint else None)
        return self.ckpts.save(self.env_steps, self._train_state(), replay)

    def _raise_nonfinite(self, key: str, update: int) -> None:
        if self.on_policy:
            step = (update + 1) * self.cfg.agent.n_steps * self.num_envs
        else:
            warm = max(1, math.ceil(self.cfg.warmup_steps / self.num_envs))
            step = (warm + update // self.cfg.updates_per_step) * self.num_envs
        last = self.ckpts.latest()
        where = f"the last good checkpoint is {last.path}" if last else "no checkpoint was saved"
        raise NonFiniteLossError(
            f"loss/{key} became non-finite (NaN or inf) at update {update} (env step ~{step}); "
            f"the run stopped and nothing after that was saved; {where}"
        )

    def run(self) -> TrainResult:
        """Train until ``total_steps`` (or a signal); always closes envs and the logger."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_run_files()
        logger = RunLogger(self.run_dir, self.task_names,
                           purge_step=self.env_steps if self.resume else None)
        try:
            return self._run(logger)
        finally:
            logger.close()
            self.close()

    def _run(self, logger: RunLogger) -> TrainResult:
        cfg = self.cfg
        if not self.resume:
            logger.text("config", "```\n" + C.dump_yaml(cfg) + "\n```")
            logger.hparams(flatten(C.to_dict(cfg)), ["eval/success_mean", "train/success_mean"])
            if isinstance(self.agent, Distiller) and self.eval_env is not None:
                self._evaluate_teachers(logger)
        metrics = _Metrics(self.device)

        stop: dict[str, Any] = {"signal": None}

        def _on_signal(signum: int, _frame: Any) -> None:
            if stop["signal"] is not None:
                raise KeyboardInterrupt
            stop["signal"] = signum
            print("\nstopping after this step and saving a checkpoint "
                  "(interrupt again to abort without saving)", file=sys.stderr)

        old_handlers = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                old_handlers[s] = signal.signal(s, _on_signal)

        total_vec = math.ceil(cfg.total_steps / self.num_envs)
        warm_vec = math.ceil(cfg.warmup_steps / self.num_envs)
        per_task = cfg.agent.batch_size // self.num_tasks
        collector = self.collector
        task_ids = collector.task_ids
        if collector.obs is None:
            collector.reset(seed=cfg.seed)

        from tqdm import tqdm

        bar = tqdm(
            total=total_vec * self.num_envs, initial=self.env_steps, unit="step",
            disable=not cfg.log.progress_bar, dynamic_ncols=True, smoothing=0.05,
            desc=cfg.preset or cfg.env.name,
        )
        last_ckpt: Path | None = None
        last_log_t = time.perf_counter()
        log_env0, log_upd0, excluded = self.env_steps, self.updates, 0.0
        final_eval: EvalResult | None = None
        self.agent.train()
        try:
            while self.vec_step < total_vec and stop["signal"] is None:
                prev = self.env_steps
                if self.on_policy:
                    self._rollout_and_update(logger, metrics, bar)
                else:
                    self._off_policy_step(logger, metrics, bar, warm_vec, per_task, task_ids)

                env_steps = self.env_steps
                if _crossed(prev, env_steps, cfg.log.every) or self.vec_step >= total_vec:
                    bad = metrics.nonfinite()
                    if bad is not None:
                        self._raise_nonfinite(*bad)
                    now = time.perf_counter()
                    dt = max(now - last_log_t - excluded, 1e-9)
                    sps = (env_steps - log_env0) / dt
                    ups = (self.updates - log_upd0) / dt
                    logger.scalar("perf/env_steps_per_sec", sps, env_steps)
                    logger.scalar("perf/updates_per_sec", ups, env_steps)
                    logger.scalars("loss", metrics.pop_means(), env_steps)
                    for name, vals in self.agent.task_metrics().items():
                        logger.per_task(name, vals.cpu().numpy(), env_steps)
                    self._log_combiners(logger, env_steps)
                    self._log_architectures(logger, env_steps)
                    last_log_t, log_env0, log_upd0, excluded = now, env_steps, self.updates, 0.0
                    bar.set_postfix(self._postfix(sps, ups), refresh=False)

                if cfg.eval.every > 0 and _crossed(prev, env_steps, cfg.eval.every) \
                        and self.vec_step < total_vec:
                    t0 = time.perf_counter()
                    bar.set_postfix_str("evaluating...", refresh=True)
                    self._evaluate(logger)
                    excluded += time.perf_counter() - t0
                    bar.set_postfix(self._postfix(None, None), refresh=False)
                if cfg.checkpoint.every > 0 and _crossed(prev, env_steps, cfg.checkpoint.every) \
                        and self.vec_step < total_vec:
                    t0 = time.perf_counter()
                    last_ckpt = self.save_checkpoint(metrics)
                    excluded += time.perf_counter() - t0
            bar.close()
            interrupted = stop["signal"] is not None
            if not interrupted and cfg.eval.final:
                final_eval = self._evaluate(logger)
            last_ckpt = self.save_checkpoint(metrics)
            logger.flush()
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        if interrupted:
            print(
                f"\ninterrupted at env step {self.env_steps}: checkpoint saved to {last_ckpt}\n"
                f"resume with: mtrl train --resume {self.run_dir}",
                file=sys.stderr,
            )
        return TrainResult(self.run_dir, self.env_steps, self.updates, interrupted, last_ckpt,
                           final_eval)

    def _off_policy_step(self, logger: RunLogger, metrics: _Metrics, bar: Any, warm_vec: int,
                         per_task: int, task_ids: np.ndarray) -> None:
        """One vector-env step into the replay buffer, then ``updates_per_step`` updates."""
        collector, buffer, agent = self.collector, self.buffer, self.agent
        assert buffer is not None and isinstance(agent, MTSAC | Distiller)
        if isinstance(agent, Distiller):
            assert collector.obs is not None
            action = self._distill_action(agent, collector.obs, task_ids)
        elif self.vec_step < warm_vec:
            action = self.warmup_rng.uniform(-1.0, 1.0, (self.num_envs, self.action_dim))
            action = action.astype(np.float32)
        else:
            assert collector.obs is not None
            action = agent.act(collector.obs, task_ids)
            if not np.isfinite(action).all():
                bad = metrics.nonfinite()
                self._raise_nonfinite(*(bad or ("actor_output", self.updates)))
        tr = collector.step(action)
        if isinstance(buffer, StateBuffer):
            buffer.add(tr.obs, tr.task_id)
        else:
            buffer.add(tr.obs, tr.action, tr.reward, tr.next_obs, tr.terminated, tr.task_id)
        self.vec_step += 1
        bar.update(self.num_envs)
        if tr.episode is not None:
            self._log_episodes(logger, tr)
        if self.vec_step >= warm_vec:
            for _ in range(self.cfg.updates_per_step):
                batch = buffer.sample(per_task)
                if isinstance(agent, Distiller):
                    metrics.add(agent.update(batch))
                else:
                    assert isinstance(batch, Batch)
                    metrics.add(agent.update(batch))
                self.updates += 1

    def _distill_action(self, agent: Distiller, obs: np.ndarray, task_ids: np.ndarray
                        ) -> np.ndarray:
        """Who acts while distilling (``agent.distill_data``): the teachers, the student
        (DAgger: the teachers label the student's own states), or per env and step the teacher
        with probability ``distill_teacher_prob``. The warm-up steps are collected the same way."""
        mode = self.cfg.agent.distill_data
        if mode == "teacher":
            return agent.teacher_act(obs, task_ids)
        if mode == "student":
            return agent.act(obs, task_ids)
        use_teacher = self.warmup_rng.random(self.num_envs) < self.cfg.agent.distill_teacher_prob
        student = agent.act(obs, task_ids)
        if not use_teacher.any():
            return student
        teacher = agent.teacher_act(obs, task_ids)
        mask = use_teacher.reshape(-1, *([1] * (student.ndim - 1)))
        return np.where(mask, teacher, student).astype(student.dtype)

    def _evaluate_teachers(self, logger: RunLogger) -> None:
        """Distillation: the teachers under the same protocol, once (``eval/teacher/...`` at
        step 0 and ``eval/teachers.json``), the reference the student is compared with."""
        assert self.eval_env is not None and isinstance(self.agent, Distiller)
        result = evaluate(_TeacherActor(self.agent), self.eval_env,
                          self.cfg.eval.episodes_per_task,
                          seed=derive_seed(self.cfg.seed, "eval"),
                          deterministic=self.cfg.eval.deterministic)
        self._log_eval(logger, "eval/teacher", result, 0)
        out = RunEvaluation(result, str(self.run_dir), None, 0, self.cfg.eval.episodes_per_task,
                            self._protocol()).to_json()
        out["teachers"] = self.teacher_specs
        write_json(self.run_dir / "eval" / "teachers.json", out)

    def _rollout_and_update(self, logger: RunLogger, metrics: _Metrics, bar: Any) -> None:
        """One rollout of ``n_steps`` vector steps with the current policy, then one update.
        Observations go to the device once each (into their storage slot, which the policy
        reads); actions come back once per step; rewards and flags once per rollout."""
        storage, collector, agent = self.storage, self.collector, self.agent
        assert storage is not None and isinstance(agent, MTA2C)
        if not storage.started:
            assert collector.obs is not None
            storage.start(collector.obs)
        tid = storage.task_id
        for _ in range(storage.num_steps):
            action, value, bonus = agent.step(storage.current_obs(), tid)
            tr = collector.step(agent.to_env(action))
            assert collector.obs is not None
            storage.add(action, value, tr.reward, tr.terminated, tr.truncated, collector.obs,
                        bonus)
            cut = tr.truncated & ~tr.terminated
            if cut.any():
                # Bootstrap from the real last observation of episodes cut by a time limit.
                idx = np.flatnonzero(cut)
                obs = torch.as_tensor(tr.next_obs[idx], device=self.device)
                storage.set_truncation_value(cut, agent.value(obs, tid[idx]))
            self.vec_step += 1
            bar.update(self.num_envs)
            if tr.episode is not None:
                self._log_episodes(logger, tr)
        last_value = agent.value(storage.current_obs(), tid)
        batch = storage.batch(last_value, self.cfg.agent.gamma, self.cfg.agent.gae_lambda)
        metrics.add(agent.update(batch))
        self.updates += 1
        storage.after_update()

    def _log_architectures(self, logger: RunLogger, step: int) -> None:
        """Routing / expert weights per task (``router/<net>/...``): images of the per-task
        weight matrices, and each task's entropy over modules/experts (collapse shows as
        entropy near 0, no specialization as entropy near log m)."""
        for net, report in self.agent.architecture_reports().items():
            for key, value in report.items():
                v = value.detach().cpu().numpy()
                if v.ndim == 3:  # [T, m, m] mixing matrices
                    logger.matrix_image(f"router/{net}/{key}", tile_matrices(v), step)
                elif v.ndim == 2:  # [T, k] weights over modules / experts
                    logger.matrix_image(f"router/{net}/{key}", v, step)
                    p = np.clip(v, 1e-12, 1.0)
                    logger.per_task(f"router/{net}/{key}_entropy", -(p * np.log(p)).sum(1),
                                    step)

    def _log_combiners(self, logger: RunLogger, step: int) -> None:
        """Gradient diagnostics (``grad/...``) and combiner state (``combiner/<net>/...``)."""
        for net, report in self.agent.combiner_reports().items():
            for key, value in report.items():
                v = value.detach().cpu().numpy()
                if key == "cosine":
                    logger.matrix_image(f"grad/cosine/{net}", v, step)
                    t = v.shape[0]
                    if t > 1:
                        off = v[~np.eye(t, dtype=bool)].reshape(t, t - 1)
                        logger.scalar(f"grad/cosine_mean/{net}", off.mean(), step)
                        logger.per_task(f"grad/cosine_to_others/{net}", off.mean(1), step)
                elif key == "conflict_fraction":
                    logger.scalar(f"grad/conflict_fraction/{net}", float(v), step)
                elif v.ndim == 1 and v.shape[0] == len(self.task_names):
                    logger.per_task(f"combiner/{net}/{key}", v, step)
                elif v.ndim == 0:
                    logger.scalar(f"combiner/{net}/{key}", float(v), step)

    def _postfix(self, sps: float | None, ups: float | None) -> dict[str, str]:
        if sps is not None:
            self._last_rates = (sps, ups)
        sps, ups = getattr(self, "_last_rates", (0.0, 0.0))
        out = {"sps": f"{sps:.0f}", "ups": f"{ups:.1f}"}
        if not self.has_success:
            if not np.isnan(self.last_returns).all():
                out["return"] = f"{np.nanmean(self.last_returns):.1f}"
        elif self.last_eval is not None:
            out["eval_success"] = f"{self.last_eval.success_mean:.2f}"
        elif not np.isnan(self.train_success).all():
            out["train_success"] = f"{np.nanmean(self.train_success):.2f}"
        return out

    def _log_episodes(self, logger: RunLogger, tr: Transitions) -> None:
        ep, done = tr.episode, tr.episode_mask
        assert ep is not None and done is not None
        if self.is_atari:
            from mtrl.envs.atari_scores import human_normalized_score
        step = self.env_steps
        for i in np.flatnonzero(done):
            k = int(tr.task_id[i])
            name = self.task_names[k]
            ret = float(ep["return"][i])
            logger.scalar(f"train/episode_return/{name}", ret, step)
            self.last_returns[k] = ret
            if self.has_success:
                logger.scalar(f"train/success/{name}", float(ep["success"][i]), step)
                self.train_success[k] = float(ep["success"][i])
            if self.is_atari:
                logger.scalar(f"train/hns/{name}", human_normalized_score(name, ret), step)
            self.episodes += 1
        if self.has_success and not np.isnan(self.train_success).any():
            logger.scalar("train/success_mean", float(np.mean(self.train_success)), step)
        if self.is_atari and not np.isnan(self.last_returns).any():
            # Median / mean human-normalized score over games of each game's latest episode.
            hns = [human_normalized_score(t, r)
                   for t, r in zip(self.task_names, self.last_returns, strict=True)]
            logger.scalar("train/hns_median", float(np.median(hns)), step)
            logger.scalar("train/hns_mean", float(np.mean(hns)), step)

    def _evaluate(self, logger: RunLogger) -> EvalResult:
        assert self.eval_env is not None
        self.agent.eval()
        seed = derive_seed(self.cfg.seed, "eval")
        result = evaluate(self.agent, self.eval_env, self.cfg.eval.episodes_per_task,
                          seed=seed, deterministic=self.cfg.eval.deterministic)
        # Distral: π0 on the same episodes (same seed), logged as eval/pi0/...
        extra = {name: evaluate(actor, self.eval_env, self.cfg.eval.episodes_per_task,
                                seed=seed, deterministic=self.cfg.eval.deterministic)
                 for name, actor in extra_policies(self.agent).items()}
        self.agent.train()
        step = self.env_steps
        self._log_eval(logger, "eval", result, step)
        for name, res in extra.items():
            self._log_eval(logger, f"eval/{name}", res, step)
        logger.flush()
        self.last_eval = result
        self.best_eval = max(self.best_eval or 0.0, result.success_mean)
        write_json(
            self.run_dir / "eval" / f"step_{step:012d}.json",
            RunEvaluation(result, str(self.run_dir), None, step,
                          self.cfg.eval.episodes_per_task, self._protocol(), extra).to_json(),
        )
        return result

    def _log_eval(self, logger: RunLogger, prefix: str, res: EvalResult, step: int) -> None:
        """``<prefix>/success|return|hns/<task>`` and their means / median over tasks."""
        for t in self.task_names:
            if self.has_success:
                logger.scalar(f"{prefix}/success/{t}", res.success[t], step)
            logger.scalar(f"{prefix}/return/{t}", res.returns[t], step)
            if res.hns:
                logger.scalar(f"{prefix}/hns/{t}", res.hns[t], step)
        if self.has_success:
            logger.scalar(f"{prefix}/success_mean", res.success_mean, step)
        logger.scalar(f"{prefix}/return_mean", res.return_mean, step)
        if res.hns:
            logger.scalar(f"{prefix}/hns_median", res.hns_median, step)
            logger.scalar(f"{prefix}/hns_mean", res.hns_mean, step)

    def _protocol(self) -> str:
        return protocol_text(self.cfg.eval.episodes_per_task,
                             deterministic=self.cfg.eval.deterministic,
                             has_success=self.has_success)

    def _write_run_files(self) -> None:
        from mtrl.checkpoint import atomic_write_text

        meta_path = self.run_dir / "metadata.json"
        if self.resume and meta_path.exists():
            import json

            meta = json.loads(meta_path.read_text())
            meta.setdefault("resumes", []).append({
                "from_checkpoint": str(self.resumed_from),
                "env_steps": self.env_steps,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "device": str(self.device),
                "command": sys.argv,
            })
            # A resumed run may extend total_steps or change the device: keep config.yaml current.
            atomic_write_text(self.run_dir / "config.yaml", C.dump_yaml(self.cfg))
        else:
            atomic_write_text(self.run_dir / "config.yaml", C.dump_yaml(self.cfg))
            meta = collect_metadata(self.cfg.seed, str(self.device), self.env.benchmark)
            meta["task_names"] = self.task_names
            meta["evaluation_protocol"] = self._protocol()
        write_json(meta_path, meta)

    def close(self) -> None:
        self.collector.close()
        if self.eval_env is not None:
            self.eval_env.close()


class _TeacherActor:
    """Acts with a distiller's teachers (each env by its task's teacher)."""

    def __init__(self, agent: Distiller) -> None:
        self.agent = agent

    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False
            ) -> np.ndarray:
        return self.agent.teacher_act(obs, task_id, deterministic)


def _check_teacher_paths(cfg: TrainConfig, tasks: list[str]) -> dict[str, str]:
    """``{task: path}`` of a distillation config, every path checked to exist (before any
    environment is built)."""
    specs = C.parse_teacher_specs(list(cfg.agent.distill_teachers), tasks)
    for t, p in specs.items():
        if not Path(p).exists():
            hint = ""
            if cfg.preset == "toy-distill":
                hint = ("; train SB3 teachers for it with `python experiments/"
                        "train_sb3_teachers.py --discrete --num-tasks "
                        f"{len(tasks)} --out runs/toy-teachers`")
            raise ConfigError(f"agent.distill_teachers: the teacher of task {t!r}, {p}, does "
                              f"not exist{hint}")
    return specs


def _crossed(prev: int, now: int, every: int) -> bool:
    return every > 0 and prev // every != now // every


def train(
    cfg: TrainConfig,
    run_dir: Path | str | None = None,
    *,
    resume: bool = False,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``runs/<preset>-s<seed>-<time>``), or resume it."""
    run_dir = Path(run_dir) if run_dir is not None else (
        Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    )
    cfg.run_dir = str(run_dir)
    return Trainer(cfg, run_dir, resume=resume, checkpoint=checkpoint).run()
