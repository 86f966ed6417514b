"""The training loop: collect → update → log → evaluate → checkpoint, the same for every agent.

:func:`train` runs a config into a run directory (or resumes one). The loop owns no algorithm:
it asks the agent's data path (:mod:`mtrl.agents.base`) to iterate on a collector
(:mod:`mtrl.collect`) until the budget of env steps is spent, and between iterations logs,
evaluates and checkpoints when the env-step counter crosses their periods, handles Ctrl-C /
SIGTERM (checkpoint, then stop) and stops on non-finite losses without saving them. What an
iteration is (one vector step and ``updates_per_step`` updates for the off-policy agents, one
rollout and one update for the on-policy ones), which policy acts and what is stored belong to
the agent's data path.
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

import numpy as np
import torch

from mtrl import config as C
from mtrl.agents import build_agent, build_data_path, preflight
from mtrl.agents.base import Iteration, NonFiniteActionError
from mtrl.checkpoint import CheckpointError, CheckpointManager, CheckpointWriteError
from mtrl.collect import Collector, VectorCollector
from mtrl.config import ConfigError, TrainConfig
from mtrl.envs import MultiTaskVectorEnv, make_env
from mtrl.evaluation import (
    EvalResult,
    EvaluationInterrupted,
    RunEvaluation,
    evaluate,
    extra_policies,
    protocol_text,
)
from mtrl.logging import (
    RunLogger,
    TextLog,
    collect_metadata,
    flatten,
    format_duration,
    tile_matrices,
    write_json,
)
from mtrl.rundir import (  # noqa: F401  (re-exported: the loop's errors and resume checks)
    ResumeError,
    RunDir,
    RunLock,
    RunLockedError,
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
    #: Wall-clock seconds of training that produced this run: this process's, plus those of
    #: earlier processes up to the checkpoint it resumed from.
    seconds: float = 0.0


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
    """Builds everything a config describes (or takes a ``collector``) and runs the loop.
    Use :func:`train`."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path | str,
        *,
        resume: bool = False,
        checkpoint: Path | None = None,
        collector: Collector | None = None,
    ) -> None:
        C.validate(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.ckpts = CheckpointManager(self.run_dir / "checkpoints", cfg.checkpoint.keep_last)
        self.resume = resume
        if resume and not self.run_dir.is_dir():
            raise ResumeError(f"run directory {self.run_dir} does not exist")
        # One writer per run directory, from before anything is read until the process ends.
        self.lock = RunLock(self.run_dir).acquire()
        try:
            self._build(cfg, checkpoint, collector)
        except BaseException:
            self.close(failed=True)
            raise

    def _build(self, cfg: TrainConfig, checkpoint: Path | None,
               collector: Collector | None) -> None:
        resume_state: dict[str, Any] | None = None
        replay_path: Path | None = None
        self.resumed_from: Path | None = None
        self.resumed_step: int | None = None
        self.seconds_before = 0.0  # training time of earlier processes (a resumed run)
        self._t_start: float | None = None
        if self.resume:
            resume_state, replay_path, self.resumed_from = self._read_resume(checkpoint)
            self.resumed_step = int(resume_state["loop"]["env_steps"])
        elif RunDir(self.run_dir).holds_run():
            raise ResumeError(
                f"run directory {self.run_dir} already holds a run; resume it with "
                f"`mtrl train --resume {self.run_dir}` or choose another --run-dir"
            )

        seed_everything(cfg.seed)
        self.task_names = C.task_names(cfg.env)
        preflight(cfg, self.task_names)  # files the run reads (teachers), before any env
        self.eval_env: MultiTaskVectorEnv | None = None
        if collector is None:
            t0 = time.perf_counter()
            remote = {"ray": f" in {cfg.collector.runners} Ray env runner(s)",
                      "pipelined": f" in {cfg.collector.workers} env worker process(es)",
                      }.get(cfg.collector.name, "")
            _say(f"building the training envs: {cfg.env.name}, {len(self.task_names)} "
                 f"task(s) x {cfg.env.envs_per_task} env(s){remote}...")
            if cfg.collector.name == "ray":  # remote env runners (the only import of ray)
                from mtrl.collect.ray import RayCollector

                collector = RayCollector(cfg)
            elif cfg.collector.name == "pipelined":  # env workers that overlap the update
                from mtrl.collect.pipelined import PipelinedCollector

                collector = PipelinedCollector(cfg)
            else:
                collector = VectorCollector(make_env(cfg.env, seed=cfg.seed))
            _say(f"  built in {format_duration(time.perf_counter() - t0)}")
        self.collector: Collector = collector
        if cfg.eval.every > 0 or cfg.eval.final:
            t0 = time.perf_counter()
            _say("building the evaluation envs (one per task)...")
            self.eval_env = make_env(cfg.env, seed=cfg.seed, evaluation=True)
            _say(f"  built in {format_duration(time.perf_counter() - t0)}")
        self.spec = self.collector.spec
        if list(self.spec.task_names) != list(self.task_names):
            raise ConfigError(f"the collector's tasks {self.spec.task_names} are not the "
                              f"config's {self.task_names}")
        act_space = self.spec.action_space
        self.num_tasks = len(self.task_names)
        self.num_envs = self.collector.num_envs
        # Benchmarks without a success flag (Atari) log returns and normalized scores.
        self.has_success = self.spec.has_success
        try:
            self.agent = build_agent(cfg.agent, obs_space=self.spec.obs_space,
                                     action_space=act_space, num_tasks=self.num_tasks,
                                     device=self.device)
        except ValueError as e:  # e.g. a continuous-action agent on discrete actions
            raise ConfigError(f"agent.name={cfg.agent.name!r} on env.name="
                              f"{cfg.env.name!r}: {e}") from e
        self.path = build_data_path(self.agent, cfg, self.spec, self.device)
        self.last_returns = np.full(self.num_tasks, np.nan)
        self.vec_step = 0
        self.updates = 0
        self.episodes = 0
        self.last_eval: EvalResult | None = None
        self.train_success = np.full(self.num_tasks, np.nan)
        if resume_state is not None:
            self._restore(resume_state, replay_path)

    @property
    def env(self) -> MultiTaskVectorEnv | None:
        """The training env of an in-process collector (None for other collectors)."""
        return getattr(self.collector, "env", None)

    @property
    def buffer(self) -> Any:
        """The agent's replay or state buffer (None for on-policy agents)."""
        return getattr(self.path, "buffer", None)

    # ------------------------------------------------------------------ resume
    def _read_resume(
        self, checkpoint: Path | None
    ) -> tuple[dict[str, Any], Path | None, Path]:
        try:
            ckpt = RunDir(self.run_dir).load_checkpoint(checkpoint, adopt=True)
        except CheckpointError as e:
            raise ResumeError(str(e)) from e
        if ckpt.replay_missing is not None:
            print(f"warning: replay buffer {ckpt.replay_missing} is gone (only the newest "
                  "checkpoint keeps one); resuming with an empty buffer", file=sys.stderr)
        unverified = [p for p in self.ckpts.unverified() if p != ckpt.path]
        for p in unverified:
            print(f"warning: {p} has no valid manifest (not completely written, or its "
                  "manifest was removed or damaged); it is kept, set aside, never overwritten",
                  file=sys.stderr)
        return ckpt.state, ckpt.replay_path, ckpt.path

    def _restore(self, state: dict[str, Any], replay: Path | None) -> None:
        try:
            self.agent.load_state_dict(state["agent"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ResumeError(
                f"checkpoint {self.resumed_from} does not fit this run's networks: "
                f"{' '.join(str(e).split())[:300]}"
            ) from e
        if replay is not None and self.path.storage_writer() is not None:
            try:
                self.path.load_storage(replay)
            except (ValueError, CheckpointError) as e:
                raise ResumeError(
                    f"replay buffer of {self.resumed_from}: {e}; move {replay.name} (and its "
                    ".json) out of the way to resume with an empty buffer") from None
        loop = state["loop"]
        self.vec_step = int(loop["vec_step"])
        self.updates = int(loop["updates"])
        self.episodes = int(loop["episodes"])
        self.seconds_before = float(state.get("seconds", 0.0))  # absent in older checkpoints
        # The data path's state (behaviour RNG); checkpoints of mtrl <= 0.1 kept it at the top.
        path_state = state.get("data_path")
        if path_state is None and "warmup_rng" in state:
            path_state = {"warmup_rng": state["warmup_rng"]}
        if path_state:
            self.path.load_state_dict(path_state)
        set_rng_state(state["rng"])
        if state.get("collector") is not None:
            self.collector.load_state_dict(state["collector"])
        else:
            self.collector.reset()

    def _set_aside(self, step: int) -> None:
        """Files of another timeline (checkpoints newer than the one resumed from, ``.pt``
        files without a valid manifest) are moved aside, never overwritten or pruned."""
        dest, moved = self.ckpts.set_aside(step)
        if dest is not None:
            print(f"note: resuming from env step {step}: {len(moved)} newer or unverified "
                  f"checkpoint file(s) moved to {dest} (kept, not deleted): "
                  f"{', '.join(moved[:8])}{' ...' if len(moved) > 8 else ''}; resume from one "
                  f"of them with --checkpoint PATH", file=sys.stderr)

    def _train_state(self) -> dict[str, Any]:
        collector_state = None
        try:
            collector_state = self.collector.state_dict()
        except Exception as e:  # e.g. async workers already gone after Ctrl-C
            print(f"warning: env state not saved ({e})", file=sys.stderr)
        return {
            "agent": self.agent.state_dict(),
            "loop": {
                "vec_step": self.vec_step,
                "env_steps": self.env_steps,
                "updates": self.updates,
                "episodes": self.episodes,
            },
            # Not in "loop": seeded runs have identical loops, never identical clocks.
            "seconds": self.seconds(),
            "data_path": self.path.state_dict(),
            "rng": rng_state(),
            "collector": collector_state,
            "config": C.to_dict(self.cfg),
            "task_names": list(self.task_names),
        }

    def seconds(self) -> float:
        """Wall-clock seconds of training up to now, over every process of this run (an earlier
        process counts up to the checkpoint this one resumed from)."""
        now = 0.0 if self._t_start is None else time.perf_counter() - self._t_start
        return self.seconds_before + now

    @property
    def env_steps(self) -> int:
        return self.vec_step * self.num_envs

    # ------------------------------------------------------------------ loop
    def save_checkpoint(self, metrics: _Metrics) -> Path:
        bad = metrics.nonfinite()
        if bad is not None:
            self._raise_nonfinite(*bad)
        try:
            return self.ckpts.save(self.env_steps, self._train_state(),
                                   self.path.storage_writer())
        except CheckpointWriteError as e:
            last = self.ckpts.latest()
            where = (f"the last complete checkpoint is {last.path}" if last
                     else "no checkpoint was saved")
            raise CheckpointWriteError(
                f"{e}; {where}; resume with: mtrl train --resume {self.run_dir}") from None

    def _raise_nonfinite(self, key: str, update: int) -> None:
        step = self.path.env_steps_at_update(update)
        last = self.ckpts.latest()
        where = f"the last good checkpoint is {last.path}" if last else "no checkpoint was saved"
        raise NonFiniteLossError(
            f"loss/{key} became non-finite (NaN or inf) at update {update} (env step ~{step}); "
            f"the run stopped and nothing after that was saved; {where}"
        )

    def run(self) -> TrainResult:
        """Train until ``total_steps`` (or a signal); always closes envs and the logger."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resumed_step is not None:
            self._set_aside(self.resumed_step)
        self._write_run_files()
        self.text = TextLog(self.run_dir, echo=not self.cfg.log.progress_bar)
        logger = RunLogger(self.run_dir, self.task_names,
                           purge_step=self.env_steps if self.resume else None,
                           wandb_project=self.cfg.log.wandb, wandb_mode=self.cfg.log.wandb_mode,
                           wandb_config=flatten(C.to_dict(self.cfg)))
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
            if self.eval_env is not None:
                self._evaluate_references(logger)
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
        # The run ends on a whole iteration (an on-policy rollout): count the steps it will take.
        per_it = max(1, int(self.path.vec_steps_per_iteration))
        if total_vec > self.vec_step:
            total_vec = self.vec_step + math.ceil((total_vec - self.vec_step) / per_it) * per_it
        if not self.collector.started:
            self.collector.reset(seed=cfg.seed)
        start_steps, t_start = self.env_steps, time.perf_counter()
        self._t_start = t_start
        total = max(total_vec, self.vec_step) * self.num_envs
        self.text.line(
            f"{'resume' if self.resume else 'start'}: {cfg.preset or cfg.env.name} "
            f"({cfg.agent.name} on {cfg.env.name}, {self.num_tasks} task(s), {self.num_envs} "
            f"env(s)), env step {self.env_steps:,} of {total:,}, device {self.device}; "
            f"evaluation every {cfg.eval.every:,} steps, checkpoint every "
            f"{cfg.checkpoint.every:,}; run directory {self.run_dir}")
        compiled = self._compile_info()
        if compiled is not None:
            notes = "".join(f"; {n}" for n in compiled["notes"])
            self.text.line(f"agent.compile={compiled['requested']}: the update runs "
                           f"{compiled['mode']}{notes}")

        if (cfg.eval.at_start and cfg.eval.every > 0 and self.env_steps == 0
                and self.eval_env is not None and not self.resume):
            self._evaluate(logger, stop)

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
                try:
                    it = self.path.iterate(self.collector, self.vec_step)
                except NonFiniteActionError:
                    self._raise_nonfinite(*(metrics.nonfinite() or ("actor_output",
                                                                      self.updates)))
                self._account(it, logger, metrics, bar)

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
                    # Collector counters (remote runners: perf/runner_restarts, ...).
                    for key, value in getattr(self.collector, "metrics", dict)().items():
                        logger.scalar(key, value, env_steps)
                    logger.scalars("loss", metrics.pop_means(), env_steps)
                    for name, vals in self.agent.task_metrics().items():
                        logger.per_task(name, vals.cpu().numpy(), env_steps)
                    self._log_combiners(logger, env_steps)
                    self._log_architectures(logger, env_steps)
                    last_log_t, log_env0, log_upd0, excluded = now, env_steps, self.updates, 0.0
                    bar.set_postfix(self._postfix(sps, ups), refresh=False)
                    self._progress_line(sps, ups, total, start_steps, t_start)

                if cfg.eval.every > 0 and _crossed(prev, env_steps, cfg.eval.every) \
                        and self.vec_step < total_vec:
                    t0 = time.perf_counter()
                    bar.set_postfix_str("evaluating...", refresh=True)
                    self._evaluate(logger, stop)
                    excluded += time.perf_counter() - t0
                    bar.set_postfix(self._postfix(None, None), refresh=False)
                if cfg.checkpoint.every > 0 and _crossed(prev, env_steps, cfg.checkpoint.every) \
                        and self.vec_step < total_vec:
                    t0 = time.perf_counter()
                    last_ckpt = self.save_checkpoint(metrics)
                    excluded += time.perf_counter() - t0
            bar.close()
            # The training state is saved before the final evaluation, so that a signal during
            # the evaluation ends the process at once with nothing to lose.
            last_ckpt = self.save_checkpoint(metrics)
            if stop["signal"] is None and cfg.eval.final:
                final_eval = self._evaluate(logger, stop)
            interrupted = stop["signal"] is not None
            logger.flush()
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        total_time = (f" ({format_duration(self.seconds())} over all its processes)"
                      if self.resume else "")
        self.text.line(
            f"{'interrupted' if interrupted else 'done'} at env step {self.env_steps:,} after "
            f"{format_duration(time.perf_counter() - t_start)}{total_time}; checkpoint "
            f"{last_ckpt}")
        if interrupted:
            print(
                f"\ninterrupted at env step {self.env_steps}: checkpoint saved to {last_ckpt}\n"
                f"resume with: mtrl train --resume {self.run_dir}",
                file=sys.stderr,
            )
        return TrainResult(self.run_dir, self.env_steps, self.updates, interrupted, last_ckpt,
                           final_eval, self.seconds())

    def _progress_line(self, sps: float, ups: float, total: int, start_steps: int,
                       t_start: float) -> None:
        """One plain-text line per log interval, with the ETA at this process's overall rate
        (evaluations and checkpoints included)."""
        steps = self.env_steps
        elapsed = time.perf_counter() - t_start
        rate = (steps - start_steps) / max(elapsed, 1e-9)
        eta = format_duration((total - steps) / rate) if rate > 0 else "?"
        parts = [f"step {steps:,}/{total:,} ({100.0 * steps / max(total, 1):.1f}%)",
                 f"{sps:.0f} steps/s", f"{ups:.1f} updates/s"]
        if self.has_success and self.last_eval is not None:
            parts.append(f"eval success {self.last_eval.success_mean:.2f}")
        elif self.has_success and not np.isnan(self.train_success).all():
            parts.append(f"train success {np.nanmean(self.train_success):.2f}")
        if not np.isnan(self.last_returns).all():
            parts.append(f"return {np.nanmean(self.last_returns):.1f}")
        parts += [f"elapsed {format_duration(elapsed)}", f"ETA {eta}"]
        self.text.line("  ".join(parts))

    def _account(self, it: Iteration, logger: RunLogger, metrics: _Metrics, bar: Any) -> None:
        """Count an iteration's env steps and updates, and log its finished episodes at the
        env step at which each ended."""
        tr = it.transitions
        ep = tr.episodes
        start = self.vec_step
        if len(ep):
            for t in np.unique(ep.step):
                rows = np.flatnonzero(ep.step == t)
                self._log_episodes(logger, ep.task_id[rows], ep.ret[rows], ep.success[rows],
                                   (start + int(t) + 1) * self.num_envs)
        self.vec_step = start + tr.num_steps
        bar.update(tr.num_steps * self.num_envs)
        for m in it.metrics:
            metrics.add(m)
            self.updates += 1

    def _evaluate_references(self, logger: RunLogger) -> None:
        """The agent's reference policies (distillation: the teachers), once, under the same
        protocol: ``eval/<name>/...`` at step 0 and ``eval/<name>s.json``."""
        assert self.eval_env is not None
        for name, ref in self.path.references().items():
            result = evaluate(ref.actor, self.eval_env, self.cfg.eval.episodes_per_task,
                              seed=derive_seed(self.cfg.seed, "eval"),
                              deterministic=self.cfg.eval.deterministic)
            self._log_eval(logger, f"eval/{name}", result, 0)
            out = RunEvaluation(result, str(self.run_dir), None, 0,
                                self.cfg.eval.episodes_per_task, self._protocol()).to_json()
            out.update(ref.info)
            write_json(self.run_dir / "eval" / f"{name}s.json", out)

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
                    logger.matrix_image(f"grad/cosine/{net}", v, step, labels=self.task_names)
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

    def _log_episodes(self, logger: RunLogger, task_ids: np.ndarray, returns: np.ndarray,
                      successes: np.ndarray, step: int) -> None:
        """Episodes that ended on one vector step, logged at env step ``step``."""
        score_fn = self.spec.score_fn
        for k, ret, success in zip(task_ids, returns, successes, strict=True):
            name = self.task_names[int(k)]
            ret = float(ret)
            logger.scalar(f"train/episode_return/{name}", ret, step)
            self.last_returns[int(k)] = ret
            if self.has_success:
                logger.scalar(f"train/success/{name}", float(success), step)
                self.train_success[int(k)] = float(success)
            if score_fn is not None:
                logger.scalar(f"train/hns/{name}", score_fn(name, ret), step)
            self.episodes += 1
        if self.has_success and not np.isnan(self.train_success).any():
            logger.scalar("train/success_mean", float(np.mean(self.train_success)), step)
        if score_fn is not None and not np.isnan(self.last_returns).any():
            # Median / mean normalized score over tasks of each task's latest episode.
            hns = [score_fn(t, r) for t, r in zip(self.task_names, self.last_returns, strict=True)]
            logger.scalar("train/hns_median", float(np.median(hns)), step)
            logger.scalar("train/hns_mean", float(np.mean(hns)), step)

    def _evaluate(self, logger: RunLogger, stop: dict[str, Any] | None = None
                  ) -> EvalResult | None:
        """Evaluate, log and write ``eval/step_<n>.json``. The global RNGs are restored
        afterwards (evaluation does not change the training that follows it). A signal
        (``stop["signal"]`` set) abandons the evaluation within one vector step: None."""
        assert self.eval_env is not None
        self.agent.eval()
        seed = derive_seed(self.cfg.seed, "eval")
        should_stop = None if stop is None else (lambda: stop["signal"] is not None)
        saved_rng = rng_state()
        policies = {"": self.agent, **extra_policies(self.agent)}
        n_eps = self.cfg.eval.episodes_per_task * self.num_tasks
        text = getattr(self, "text", None)
        if text is not None:
            text.line(f"evaluating at env step {self.env_steps:,}: "
                      f"{self.cfg.eval.episodes_per_task} episode(s) x {self.num_tasks} task(s)"
                      + (f" x {len(policies)} policies" if len(policies) > 1 else ""))
        t0 = time.perf_counter()
        results: dict[str, EvalResult] = {}
        try:
            with _EvalProgress(n_eps * len(policies), self.cfg.log.progress_bar, text) as prog:
                for k, (name, actor) in enumerate(policies.items()):
                    # Other policies of the agent (Distral's π0) on the same episodes:
                    # eval/<name>/...
                    def report(done: int, _total: int, base: int = k * n_eps) -> None:
                        prog.update(base + done)

                    results[name] = evaluate(
                        actor, self.eval_env, self.cfg.eval.episodes_per_task, seed=seed,
                        deterministic=self.cfg.eval.deterministic, should_stop=should_stop,
                        progress=report)
        except EvaluationInterrupted:
            print(f"\nevaluation at env step {self.env_steps} abandoned (interrupted)",
                  file=sys.stderr)
            return None
        finally:
            set_rng_state(saved_rng)
            self.agent.train()
        result = results.pop("")
        extra = results
        if text is not None:
            summary = (f"success {result.success_mean:.3f}" if self.has_success
                       else f"return {result.return_mean:.2f}")
            text.line(f"evaluation at env step {self.env_steps:,}: {summary} "
                      f"({format_duration(time.perf_counter() - t0)})")
        step = self.env_steps
        self._log_eval(logger, "eval", result, step)
        for name, res in extra.items():
            self._log_eval(logger, f"eval/{name}", res, step)
        logger.flush()
        self.last_eval = result
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
            meta = collect_metadata(self.cfg.seed, str(self.device), self.spec.benchmark)
            meta["task_names"] = self.task_names
            meta["evaluation_protocol"] = self._protocol()
            meta["collector"] = dict(getattr(self.collector, "info", None)
                                     or {"name": type(self.collector).__name__})
            from mtrl.api import space_to_json

            # What mtrl.load needs to rebuild the policy without building an env.
            meta["spaces"] = {"observation": space_to_json(self.spec.obs_space),
                              "action": space_to_json(self.spec.action_space)}
        compiled = self._compile_info()
        if compiled is not None:  # agent.compile as it runs, and what runs eagerly
            meta["compile"] = compiled
        write_json(meta_path, meta)

    def _compile_info(self) -> dict[str, Any] | None:
        """The agent's ``compile_info`` when ``agent.compile`` is not off (None otherwise)."""
        info = getattr(self.agent, "compile_info", None)
        if not isinstance(info, dict) or info.get("requested", "off") == "off":
            return None
        return info

    def close(self, *, failed: bool = False) -> None:
        """Close the envs and release the run directory (``failed``: construction failed, so
        a directory this trainer created and left empty is removed again)."""
        try:
            collector = getattr(self, "collector", None)
            if collector is not None:
                collector.close()
            if getattr(self, "eval_env", None) is not None:
                assert self.eval_env is not None
                self.eval_env.close()
        finally:
            lock = getattr(self, "lock", None)
            if lock is not None:
                lock.release(remove_if_unused=failed)


class _EvalProgress:
    """Episodes done out of the evaluation's total: a transient bar with the progress bar on,
    otherwise a text line at most every 30 s."""

    def __init__(self, total: int, bar: bool, text: TextLog | None) -> None:
        self.total, self.text = total, text
        self.bar: Any = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="evaluating", unit="episode", leave=False,
                            dynamic_ncols=True)
        self.done = 0
        self.last_line = time.perf_counter()

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        now = time.perf_counter()
        if self.bar is None and self.text is not None and now - self.last_line > 30.0:
            self.text.line(f"  evaluation: {done}/{self.total} episodes")
            self.last_line = now

    def __enter__(self) -> _EvalProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def _say(text: str) -> None:
    """A start-up line (slow steps announce themselves before they start)."""
    print(text, flush=True)


def _crossed(prev: int, now: int, every: int) -> bool:
    return every > 0 and prev // every != now // every


def train(
    cfg: TrainConfig,
    run_dir: Path | str | None = None,
    *,
    resume: bool = False,
    checkpoint: Path | None = None,
    collector: Collector | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``runs/<preset>-s<seed>-<time>``), or resume it.
    ``collector``: collect with this instead of an in-process vector env built from
    ``cfg.env`` (its tasks must be the config's)."""
    run_dir = Path(run_dir) if run_dir is not None else (
        Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    )
    cfg.run_dir = str(run_dir)
    return Trainer(cfg, run_dir, resume=resume, checkpoint=checkpoint,
                   collector=collector).run()
