"""Remote env runners on Ray: :class:`RayCollector`, the collector seam
(:mod:`mtrl.collect.base`) with the envs stepping in other processes, on this machine or a
cluster.

This module is the only one that imports ``ray``, and only when a :class:`RayCollector` is
built (``collector.name=ray``; ``pip install 'mtrl[ray]'``): mtrl without Ray works as before.

Design (the actor-learner split of IMPALA, Espeholt et al. 2018, "IMPALA: Scalable Distributed
Deep-RL with Importance Weighted Actor-Learner Architectures", with a hand-over at fixed points
of the learner's loop, so that runs are reproducible):

* **Runners.** ``collector.runners`` env-runner actors (Ray actors of :class:`EnvRunner`) each
  own a contiguous slice of the training envs, in env order: runner ``r`` builds its own
  :class:`~mtrl.envs.base.MultiTaskVectorEnv` of those envs with :func:`mtrl.envs.make_env`
  (``tasks=``: the global task of each of its envs; the env keeps the whole benchmark's task
  names and global task ids, and Meta-World's sub-envs are built exactly as in the whole
  benchmark: same goals, same env seeds). :meth:`RayCollector.collect` asks every runner for
  ``n`` vector steps at once and concatenates the chunks in runner order, so it returns what
  the in-process :class:`~mtrl.collect.VectorCollector` returns: the same
  :class:`~mtrl.collect.Transitions` structure, envs in global order, finished episodes
  (return, length, success, global env index and task) in the order they ended, and the policy
  version that acted. The off-policy data path (MT-SAC, Distral-SAC) uses it unchanged.
* **Acting.** Each runner acts with a CPU copy of the agent, rebuilt from the run config the
  way :func:`mtrl.load` rebuilds a policy (:func:`mtrl.agents.build_agent` on the spaces of
  its envs, fresh weights), into which it loads the modules the learner's agent acts with
  (``agent.policy_modules()``, the contract distillation teachers use too); it then acts with
  the agent's own ``act`` (the same code as the learner's behaviour policy, non-finite actions
  included). What crosses process boundaries is the config, state dicts of tensors, actions
  and transitions: no pickled learner object, no second definition of a network. The runner
  builds the agent on first use, so a warm-up costs none.
* **On-policy unrolls (MT-IMPALA).** An on-policy data path that learns from lagged unrolls
  (``remote_rollouts``: :class:`~mtrl.agents.impala.VTraceDataPath`) is not stepped through
  its ``observe``; the runners act with the agent's rollout step (:class:`RolloutActor`, the
  code the learner's in-process rollout runs) and return, with each chunk,
  :attr:`~mtrl.collect.base.Transitions.extras` ``log_prob`` (``log μ(a|s)``), ``sample``
  (the action before clipping) and ``truncation_value`` (``V`` of the real last observation of
  episodes cut by a time limit), and ``last_obs``, the observation after the unroll (its
  bootstrap). One chunk is one update in the publish schedule. V-trace's truncated importance
  weights correct for the lag (Espeholt et al. 2018, Sec. 4.1).
* **Weights and policy lag.** The learner *publishes* its acting weights through Ray's object
  store (``ray.put`` of CPU state dicts, one object fetched once per publish by every runner)
  with a policy version that increases by one per publish (0: no weights, the warm-up). It
  publishes at a collect call when ``collector.publish_every`` updates have been made since the
  last publish (counted as the replay data path makes them: ``updates_per_step`` per vector
  step, ``collect_steps`` vector steps per chunk, once the warm-up is over;
  :meth:`RayCollector.publish` publishes at once). **Policy lag:** runners act with the
  weights of the last publish, which are at most one publish old: at most
  ``publish_every - 1`` updates behind the learner (``publish_every=1``, the default, without
  prefetch: never behind, as in process). Every chunk carries the version that produced it.
* **Prefetch** (``collector.prefetch``, default on): the runners keep one request in flight.
  :meth:`RayCollector.collect` returns the chunk requested at the end of the previous call and,
  before returning, requests the next one (publishing first if due), which the runners step
  while the learner updates on what it got: the overlap of acting and learning of IMPALA's
  actors (and of :mod:`mtrl.collect.pipelined` in process), and one round trip to the runners
  hidden behind the learner's work instead of added to it. The price is one more update of
  policy lag (the next chunk is asked for before the update on the last one) and a warm-up one
  chunk longer (the chunk in flight when it ends was drawn during it). The chunk size must not
  change between calls (the data paths ask for one size: 1 vector step for the replay agents,
  the unroll length for IMPALA). Off (``false``), the learner asks for each chunk when it needs
  it and waits. Either way the requests are made at fixed points of the learner's loop, with
  the weights and warm-up actions of that point, so which weights produced which transitions
  does not depend on timing: seeded runs are reproducible.
* **Warm-up.** The uniform random actions of the replay data path's warm-up
  (:class:`~mtrl.agents.offpolicy.UniformWarmup`) are drawn in the learner, from the data
  path's own seeded generator, exactly as the in-process collector draws them, and sent to the
  runners with the request (a few floats per env). A checkpoint holds that generator; the
  warm-up is the same with one runner, many, or none.
* **Seeds.** Runner ``r`` builds its envs with the run's seed (Meta-World draws its goals from
  it: every runner has the benchmark's goals, those of the evaluation envs) and resets them with
  one seed per env, ``seed + i`` for its global env index ``i``: gymnasium's convention, so
  envs with one generator per sub-env (Meta-World) step exactly as in process. Envs with one
  generator for all sub-envs (the toy) seed it with the first of its seeds, so a runner's
  slice differs from the same envs in process; given the same actions (the warm-up's), one
  runner steps exactly as the in-process collector. Runner ``r`` acts with torch's generator
  seeded by :func:`act_seed` (the in-process collector acts with the learner's).
* **Faults** (Ray's actor fault tolerance,
  https://docs.ray.io/en/latest/ray-core/fault_tolerance/actors.html): runners are created
  with ``max_restarts=collector.max_restarts`` and no task retries. A runner whose process dies
  is restarted by Ray (its constructor runs again: its envs are rebuilt); the learner notices
  (the call in flight fails, or the runner reports that it is fresh), resets the runner's envs
  with fresh seeds derived from (seed, runner, restart count) (:func:`runner_seeds`), collects
  its share again, prints a warning line and counts ``perf/runner_restarts``; the episodes in
  progress on that runner are lost, the run goes on. An env that raises does not restart
  anything: the learner raises a one-line :class:`~mtrl.errors.CollectorError` (a
  RuntimeError; ``mtrl train`` prints it as ``mtrl: error: runner 1 (reach-v3): ValueError:
  ...``) naming the runner's tasks, not a hang or a Ray traceback.
* **Resume.** :meth:`RayCollector.state_dict` holds the policy version, the publish schedule
  and the last published weights, each runner's restart count, env state (random generators;
  toy envs: their episodes in progress), current observations and acting generator, and the
  chunk that was in flight (waited for first, kept for the next ``collect``, so that saving
  does not change what is collected and a resumed run returns it first).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtrl.collect.base import EnvSpec, Episodes, Transitions
from mtrl.errors import CollectorError
from mtrl.seeding import derive_seed

if TYPE_CHECKING:
    from mtrl.config import TrainConfig

#: Ray's settings for a Ray that mtrl starts itself on this machine. Ray runs its worker
#: processes at niceness 15 by default (``worker_niceness``): env runners and launched seeds
#: are the job itself, and at that niceness a learner on the same machine (niceness 0) takes
#: the cores from them whenever it computes (on 2 cores, a runner's 2.5 ms vector step took
#: ~75 ms during a learner's update; building its agent took 70 s instead of 2).
#: On a cluster started with ``ray start``, set ``RAY_worker_niceness=0`` on the nodes.
LOCAL_RAY_SYSTEM_CONFIG = {"worker_niceness": 0}
#: Seconds the runners may take to start (build their envs) before the learner gives up.
START_TIMEOUT_S = 900.0
#: Tries (a second apart) to reach a runner that Ray is restarting.
RESET_ATTEMPTS = 30


def runner_seeds(seed: int, runner: int, restarts: int, env_ids: list[int]) -> list[int]:
    """The reset seeds of runner ``runner``'s envs (global indices ``env_ids``) after
    ``restarts`` restarts: ``seed + i`` at first (gymnasium's convention for a vector env's
    sub-env ``i``, so that Meta-World runners step as the in-process env does), afterwards
    ``s + i`` for a fresh ``s`` derived from (seed, runner, restarts)."""
    base = seed if restarts == 0 else derive_seed(seed, f"ray-runner-{runner}-restart-{restarts}")
    return [int(base) + int(i) for i in env_ids]


def act_seed(seed: int, runner: int, restarts: int) -> int:
    """The seed of runner ``runner``'s acting generator (torch's) after ``restarts`` restarts."""
    return derive_seed(seed, f"ray-runner-{runner}-restart-{restarts}-act")


def split_envs(num_envs: int, runners: int) -> list[list[int]]:
    """Global env indices of each runner: contiguous, in env order, sizes differing by at most
    one."""
    if not 1 <= runners <= num_envs:
        raise ValueError(f"cannot split {num_envs} env(s) over {runners} runner(s)")
    return [[int(i) for i in part] for part in np.array_split(np.arange(num_envs), runners)]


def one_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line."""
    text = " ".join(str(e).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class RolloutActor:
    """A runner's on-policy behaviour for one chunk: acts with the agent's rollout step
    (``agent.step(obs, task_id) -> (action, value, bonus, log_prob)`` on CPU tensors, the same
    code as the learner's in-process rollout) and keeps what a learner of lagged rollouts needs
    and cannot recompute: ``log μ(a|s)``, the sampled action (before clipping to the env's
    bounds) and, where a time limit cut an episode, ``V`` of its real last observation (the
    learner never sees that observation). :meth:`extras` returns them ``[n, N]``."""

    def __init__(self, agent: Any) -> None:
        if not callable(getattr(agent, "step", None)):
            raise TypeError(f"{type(agent).__name__} has no rollout step(obs, task_id)")
        self.agent = agent
        self._log_prob: list[np.ndarray] = []
        self._sample: list[np.ndarray] = []
        self._truncation_value: list[np.ndarray] = []

    @torch.no_grad()
    def act(self, obs: np.ndarray, task_id: np.ndarray) -> np.ndarray:
        out = self.agent.step(torch.as_tensor(obs), torch.as_tensor(task_id))
        action, log_prob = out[0], out[3]
        if log_prob is None:
            raise TypeError(f"{type(self.agent).__name__}.step returns no log-probability")
        self._log_prob.append(log_prob.float().numpy())
        self._sample.append(action.numpy())
        return np.asarray(self.agent.to_env(action))

    @torch.no_grad()
    def observe(self, step: Any) -> None:
        value = np.zeros(step.reward.shape, dtype=np.float32)
        cut = step.truncated & ~step.terminated
        if cut.any():
            idx = np.flatnonzero(cut)
            v = self.agent.value(torch.as_tensor(step.next_obs[idx]),
                                 torch.as_tensor(step.task_id[idx]))
            value[idx] = v.float().numpy()
        self._truncation_value.append(value)

    def extras(self) -> dict[str, np.ndarray]:
        return {"log_prob": np.stack(self._log_prob), "sample": np.stack(self._sample),
                "truncation_value": np.stack(self._truncation_value)}


class EnvRunner:
    """One env runner: a slice of the training envs and a CPU copy of the acting agent. The
    body of a Ray actor (:class:`RayCollector` wraps it with ``ray.remote``); plain Python, so
    that it runs in process too.

    Every method returns ``{"status": ...}``: ``ok``, ``fresh`` (not reset since the process
    started: a restarted actor), ``error`` (one line in ``error``) or ``nonfinite``."""

    def __init__(self, cfg: TrainConfig, index: int, tasks: list[int] | None) -> None:
        self.index = index
        self.cfg = cfg
        self.started = False
        self.version = 0
        self.agent: Any = None
        self.error: str | None = None
        torch.set_num_threads(1)
        try:
            if cfg.plugins:
                from mtrl.plugins import load_plugins

                load_plugins(cfg.plugins)
            from mtrl.collect.vector import VectorCollector
            from mtrl.envs import make_env

            self.env = make_env(cfg.env, seed=cfg.seed, tasks=tasks)
            self.collector = VectorCollector(self.env)
        except Exception as e:  # reported by every call, on one line
            self.error = f"building its envs: {one_line(e)}"

    def _failed(self) -> dict[str, Any] | None:
        if self.error is not None:
            return {"status": "error", "error": self.error}
        if not self.started:
            return {"status": "fresh"}
        return None

    def spec(self) -> dict[str, Any]:
        if self.error is not None:
            return {"status": "error", "error": self.error}
        return {"status": "ok", "spec": EnvSpec.of(self.env)}

    def pid(self) -> int:
        import os

        return os.getpid()

    def reset(self, seeds: list[int], acting_seed: int) -> dict[str, Any]:
        """New episodes in every env (one seed per env), and the acting generator seeded."""
        if self.error is not None:
            return {"status": "error", "error": self.error}
        try:
            self.collector.reset(seed=seeds)
        except Exception as e:
            return {"status": "error", "error": one_line(e)}
        torch.manual_seed(acting_seed)
        self.started = True
        return {"status": "ok"}

    def collect(self, n: int, actions: np.ndarray | None, weights: list[Any],
                version: int, mode: str = "replay") -> dict[str, Any]:
        """``n`` vector steps: with ``actions`` ``[n, envs, ...]`` (the learner's warm-up), or
        acting with the agent at ``version`` (``weights[0]``: the object-store reference of
        its state dicts, fetched when the version changes): its ``act`` (``mode="replay"``), or
        its rollout step with the extras an on-policy learner needs (``mode="rollout"``,
        :class:`RolloutActor`)."""
        failed = self._failed()
        if failed is not None:
            return failed
        from mtrl.agents.base import NonFiniteActionError

        try:
            if actions is not None:
                steps = [self.collector.step(actions[t]) for t in range(n)]
                tr = Transitions.from_steps(steps, 0)
            else:
                self._load_weights(weights, version)
                if mode == "rollout":
                    actor = RolloutActor(self.agent)
                    tr = self.collector.collect(actor, n)
                    tr.extras = actor.extras()
                else:
                    tr = self.collector.collect(self._behaviour, n)
                tr.policy_version = self.version
        except NonFiniteActionError as e:
            return {"status": "nonfinite", "error": one_line(e)}
        except Exception as e:
            return {"status": "error", "error": one_line(e)}
        return {"status": "ok", "transitions": tr}

    def _load_weights(self, weights: list[Any], version: int) -> None:
        if version == self.version and self.agent is not None:
            return
        import ray

        from mtrl import config as C
        from mtrl.agents import build_agent
        from mtrl.agents.offpolicy import UniformWarmup

        if self.agent is None:
            spec = EnvSpec.of(self.env)
            with torch.random.fork_rng(devices=[]):  # the acting generator stays as seeded
                self.agent = build_agent(self.cfg.agent, obs_space=spec.obs_space,
                                         action_space=spec.action_space,
                                         num_tasks=len(C.task_names(self.cfg.env)),
                                         device=torch.device("cpu"))
            # The learner's own behaviour policy past the warm-up: agent.act, finite actions.
            self._behaviour = UniformWarmup(self.agent, np.random.default_rng(0),
                                            spec.action_dim)
            self._behaviour.warm = False
        state = ray.get(weights[0])
        modules = self.agent.policy_modules()
        if len(modules) != len(state):
            raise RuntimeError(f"the learner published {len(state)} module(s), the runner's "
                               f"agent acts with {len(modules)}")
        for module, sd in zip(modules, state, strict=True):
            module.load_state_dict(sd)
        self.version = version

    def state(self) -> dict[str, Any]:
        failed = self._failed()
        if failed is not None:
            return failed
        try:
            state = self.collector.state_dict()
        except Exception as e:
            return {"status": "error", "error": one_line(e)}
        state["acting_rng"] = torch.get_rng_state()
        return {"status": "ok", "state": state}

    def load_state(self, state: dict[str, Any]) -> dict[str, Any]:
        if self.error is not None:
            return {"status": "error", "error": self.error}
        try:
            self.collector.load_state_dict(state)
            torch.set_rng_state(state["acting_rng"])
        except Exception as e:
            return {"status": "error", "error": one_line(e)}
        self.started = True
        return {"status": "ok"}


@dataclass
class _Request:
    """Chunks asked of every runner: ``refs[r]`` is ``call(r, handle)``'s object ref (called
    again for a runner that has to be recovered)."""

    n: int
    mode: str
    call: Callable[[int, Any], Any]
    refs: dict[int, Any]


class RayCollector:
    """Remote env runners on Ray; see the module docstring for the design, the policy lag and
    what happens when a runner dies.

    ``cfg``: the run's config (``cfg.collector``: runners, publish_every, address,
    max_restarts; ``cfg.env``, ``cfg.agent``, ``cfg.seed``, ``cfg.updates_per_step``). Joins
    the Ray session of this process if there is one (and leaves it running on :meth:`close`),
    else starts or joins one as ``collector.address`` says (and shuts it down on close).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        try:
            import ray
        except ImportError as e:
            from mtrl.errors import ConfigError

            raise ConfigError("collector.name='ray' needs the ray package: "
                              "pip install 'mtrl[ray]'") from e
        from mtrl import config as C

        self._ray = ray
        self.cfg = cfg
        c = cfg.collector
        self.num_runners = int(c.runners)
        self.publish_every = int(c.publish_every)
        self.max_restarts = int(c.max_restarts)
        self.address = c.address
        self.task_names = C.task_names(cfg.env)
        self._owns_ray = False
        self._handles: list[Any] = []
        if not ray.is_initialized():
            if c.address is None:
                ray.init(include_dashboard=False, logging_level=logging.WARNING,
                         _system_config=LOCAL_RAY_SYSTEM_CONFIG)
            else:
                ray.init(address=c.address, logging_level=logging.WARNING)
            self._owns_ray = True
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.version = 0
        self.restarts = [0] * self.num_runners  # over the whole run (checkpointed)
        self._restarts_here = [0] * self.num_runners  # of these actors (Ray's max_restarts)
        self._weights: list[dict[str, torch.Tensor]] | None = None
        self._weights_ref: Any = None
        self._since_publish = 0
        self._updates_per_collect = int(cfg.updates_per_step) * int(cfg.collect_steps)
        self._seed = int(cfg.seed)
        self._started = False
        self._prefetch = bool(c.prefetch)
        self._inflight: _Request | None = None  # the next chunk, stepping (prefetch)
        self._ready: tuple[int, str, Transitions] | None = None  # (n, mode, chunk) held back
        self._warm_obs = np.zeros((self.num_envs, *self._spec.obs_shape), dtype=np.float32)

    # ------------------------------------------------------------------ start-up
    def _start(self) -> None:
        ray = self._ray
        cfg = self.cfg
        T = len(self.task_names)
        if self.num_runners == 1:
            plan: list[list[int] | None] = [None]  # the whole env, whatever builds it
        else:
            layout = np.repeat(np.arange(T), cfg.env.envs_per_task)
            self.env_ids = split_envs(len(layout), self.num_runners)
            plan = [[int(layout[i]) for i in ids] for ids in self.env_ids]
        self._runner_tasks = [self.task_names if tasks is None
                              else [self.task_names[k] for k in sorted(set(tasks))]
                              for tasks in plan]
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        # One CPU per runner, or an equal share when there are more runners than CPUs.
        per_runner = min(1.0, cpus / self.num_runners)
        actor = ray.remote(EnvRunner)
        for r, tasks in enumerate(plan):
            self._handles.append(actor.options(
                max_restarts=self.max_restarts, max_task_retries=0, num_cpus=per_runner,
            ).remote(cfg, r, tasks))
        refs = [h.spec.remote() for h in self._handles]
        try:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=START_TIMEOUT_S)
        except ray.exceptions.RayError as e:
            raise CollectorError(f"the Ray env runners did not start: {one_line(e)}") from None
        if len(ready) < len(refs):
            raise CollectorError(
                f"the {self.num_runners} Ray env runner(s) did not start within "
                f"{START_TIMEOUT_S:.0f} s (cluster resources: {ray.cluster_resources()})")
        specs: list[EnvSpec] = []
        for r, ref in enumerate(refs):
            try:
                out = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise CollectorError(f"runner {r}: could not start: {one_line(e)}") from None
            if out["status"] != "ok":
                raise CollectorError(f"runner {r}{self._tasks_text(r)}: {out['error']}")
            specs.append(out["spec"])
        if self.num_runners == 1:
            self.env_ids = [list(range(specs[0].num_envs))]
        task_ids = np.concatenate([s.task_ids for s in specs])
        for r, (s, tasks) in enumerate(zip(specs, plan, strict=True)):
            if tasks is not None and s.task_ids.tolist() != tasks:
                raise CollectorError(f"runner {r} built envs of tasks {s.task_ids.tolist()}, "
                                     f"not the {tasks} it was given")
            if s.obs_space != specs[0].obs_space or s.action_space != specs[0].action_space:
                raise CollectorError(f"runner {r}'s envs have other spaces than runner 0's")
        first = specs[0]
        self._spec = EnvSpec(list(first.task_names), task_ids.astype(np.int64), first.obs_space,
                             first.action_space, dict(first.benchmark),
                             {k: v for s in specs for k, v in s.teacher_action_maps.items()},
                             first.score_fn)

    def _tasks_text(self, r: int) -> str:
        """`` (task, task, ...)``: the tasks of runner ``r``'s envs."""
        names = self._runner_tasks[r]
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} tasks)" if len(names) > 4 else "")
        return f" ({shown})"

    # ------------------------------------------------------------------ the Collector protocol
    @property
    def spec(self) -> EnvSpec:
        return self._spec

    @property
    def task_ids(self) -> np.ndarray:
        return self._spec.task_ids

    @property
    def num_envs(self) -> int:
        return self._spec.num_envs

    @property
    def started(self) -> bool:
        return self._started

    @property
    def prefetch(self) -> bool:
        """Whether a chunk is kept in flight (``collector.prefetch``); switching it waits for
        the chunk in flight and drops it (the envs have stepped it)."""
        return self._prefetch

    @prefetch.setter
    def prefetch(self, on: bool) -> None:
        if bool(on) != self._prefetch:
            self._drop_inflight()
            self._prefetch = bool(on)

    @property
    def info(self) -> dict[str, Any]:
        """What the run's metadata records about the collector."""
        return {
            "name": "ray",
            "ray": str(getattr(self._ray, "__version__", "?")),
            "address": self.address,
            "runners": self.num_runners,
            "envs_per_runner": [len(ids) for ids in self.env_ids],
            "tasks_per_runner": self._runner_tasks,
            "publish_every": self.publish_every,
            "max_restarts": self.max_restarts,
            "prefetch": self.prefetch,
            "policy_lag": (f"runners act with the weights of the last publish, at most "
                           f"publish_every - 1 = {self.publish_every - 1} update(s) behind the "
                           "learner" + ("; with prefetch the next chunk is requested before "
                                        "the learner's updates on the last one: "
                                        f"{self._updates_per_collect} update(s) more"
                                        if self.prefetch else "")
                           + "; chunks carry the policy version that produced them"),
            "warmup": ("uniform actions drawn in the learner (the data path's generator)"
                       + ("; the chunk in flight when the warm-up ends was drawn during it: "
                          "the warm-up is one chunk longer" if self.prefetch else "")),
            "seeds": "runner envs reset with seed + global env index; fresh seeds derived "
                     "from (seed, runner, restart count) after a restart",
        }

    def metrics(self) -> dict[str, float]:
        """Scalars the training loop logs with its throughput (``perf/...``)."""
        return {"perf/runner_restarts": float(sum(self.restarts)),
                "perf/policy_version": float(self.version)}

    def reset(self, seed: int | None = None) -> None:
        """New episodes in every runner: runner ``r``'s envs seeded by :func:`runner_seeds`
        (``seed`` None: the run's seed)."""
        self._seed = int(self.cfg.seed if seed is None else seed)
        self._drop_inflight()
        self._call_all(lambda r, h: h.reset.remote(self._reset_seeds(r),
                                                   act_seed(self._seed, r, self.restarts[r])))
        self._started = True

    def _reset_seeds(self, r: int) -> list[int]:
        return runner_seeds(self._seed, r, self.restarts[r], self.env_ids[r])

    def publish(self, agent: Any) -> int:
        """Send ``agent``'s acting weights (``policy_modules()``, as CPU tensors) to the
        runners through the object store; returns the new policy version."""
        weights = [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
                   for m in agent.policy_modules()]
        self._set_weights(weights)
        self.version += 1
        self._since_publish = 0
        return self.version

    def _set_weights(self, weights: list[dict[str, torch.Tensor]]) -> None:
        self._weights = weights
        self._weights_ref = self._ray.put(weights)

    def collect(self, policy: Any, n: int) -> Transitions:
        """``n`` vector steps of every runner; the chunks in global env order.

        ``policy``: the replay data path's behaviour
        (:class:`~mtrl.agents.offpolicy.UniformWarmup`; while ``warm`` its uniform actions are
        drawn here), or an agent (``policy_modules()`` and ``act``), which the runners act with
        (see the module docstring for the weights they use). With ``collector.prefetch`` the
        chunk returned is the one requested at the end of the previous call (if any), and the
        next one is requested before returning."""
        if not self._started:
            raise RuntimeError("reset() the collector before collecting")
        if n < 1:
            raise ValueError(f"n={n}: collect at least one vector step")
        from mtrl.agents.offpolicy import UniformWarmup

        mode = self._mode(policy)
        if self._ready is None and self._inflight is not None:
            req = self._inflight
            self._inflight = None
            self._ready = (req.n, req.mode, self._gather(req))
        if self._ready is not None:
            got_n, got_mode, tr = self._ready
            if (got_n, got_mode) != (n, mode):
                raise CollectorError(
                    f"collect(n={n}, {mode}) while a chunk of n={got_n} ({got_mode}) was "
                    "prefetched: with collector.prefetch the data path must ask for chunks of "
                    "one size; set collector.prefetch=false")
            self._ready = None
        else:
            tr = self._gather(self._request(policy, n, mode))
        if not (isinstance(policy, UniformWarmup) and policy.warm):
            # Past the warm-up the learner updates on every chunk: the publish schedule counts
            # its updates (the replay path's updates_per_step; one per on-policy chunk).
            self._since_publish += self._updates_per_collect if mode == "replay" else 1
        if self.prefetch:
            self._inflight = self._request(policy, n, mode)
        return tr

    def _mode(self, policy: Any) -> str:
        """``replay`` (the uniform warm-up or an agent's ``act``) or ``rollout`` (an on-policy
        data path that takes remote rollouts)."""
        if getattr(policy, "remote_rollouts", False):
            return "rollout"
        return "replay"

    def _request(self, policy: Any, n: int, mode: str) -> _Request:
        """Ask every runner for its share of ``n`` vector steps acted by ``policy`` (drawing
        the warm-up's actions, or publishing the weights if due, now)."""
        from mtrl.agents.offpolicy import UniformWarmup

        actions: np.ndarray | None = None
        if isinstance(policy, UniformWarmup) and policy.warm:
            actions = np.stack([policy.act(self._warm_obs, self.task_ids) for _ in range(n)])
        else:
            # An on-policy data path (rollout): the runners act with its agent's rollout step
            # and return the extras its learner needs; it makes one update per chunk.
            agent = policy.agent if mode == "rollout" or isinstance(policy, UniformWarmup) \
                else policy
            if not callable(getattr(agent, "policy_modules", None)):
                raise TypeError(
                    f"the Ray collector acts with the uniform warm-up, an agent's own policy "
                    f"(policy_modules()) or an on-policy data path that takes remote rollouts, "
                    f"not with {type(policy).__name__}")
            if self._weights_ref is None or self._since_publish >= self.publish_every:
                self.publish(agent)
        weights, version = [self._weights_ref], self.version

        def call(r: int, h: Any) -> Any:
            ids = self.env_ids[r]
            part = None if actions is None else actions[:, ids[0]:ids[-1] + 1]
            return h.collect.remote(n, part, weights, version, mode)

        return _Request(n, mode, call, self._submit(call))

    def _gather(self, req: _Request) -> Transitions:
        outs = self._wait(req.call, req.refs)
        return self._merge([o["transitions"] for o in outs])

    def _drop_inflight(self) -> None:
        """Forget the chunk in flight (waited for: the runners' envs have stepped it) and any
        chunk held back; before a reset or a restore, which start the envs afresh."""
        req, self._inflight, self._ready = self._inflight, None, None
        if req is not None:
            with contextlib.suppress(Exception):  # a failed chunk is not wanted either
                self._wait(req.call, req.refs)

    def _merge(self, chunks: list[Transitions]) -> Transitions:
        offsets = [ids[0] for ids in self.env_ids]
        eps = [c.episodes for c in chunks]
        env = np.concatenate([e.env + off for e, off in zip(eps, offsets, strict=True)])
        step = np.concatenate([e.step for e in eps])
        order = np.lexsort((env, step))  # as in process: by step, then env

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(e, name) for e in eps])[order]

        episodes = Episodes(step=step[order], env=env[order], task_id=cat("task_id"),
                            ret=cat("ret"), length=cat("length"), success=cat("success"))
        return Transitions(
            obs=np.concatenate([c.obs for c in chunks], axis=1),
            action=np.concatenate([c.action for c in chunks], axis=1),
            reward=np.concatenate([c.reward for c in chunks], axis=1),
            next_obs=np.concatenate([c.next_obs for c in chunks], axis=1),
            terminated=np.concatenate([c.terminated for c in chunks], axis=1),
            truncated=np.concatenate([c.truncated for c in chunks], axis=1),
            task_id=np.concatenate([c.task_id for c in chunks]),
            episodes=episodes,
            policy_version=min(int(c.policy_version) for c in chunks),
            last_obs=(None if any(c.last_obs is None for c in chunks)
                      else np.concatenate([c.last_obs for c in chunks])),
            extras={k: np.concatenate([c.extras[k] for c in chunks], axis=1)
                    for k in chunks[0].extras},
        )

    # ------------------------------------------------------------------ calls and faults
    def _call_all(self, call: Any) -> list[dict[str, Any]]:
        """``call(r, handle)`` (an object ref) on every runner; a runner that died or restarted
        is recovered (:meth:`_recover`) and called again."""
        return self._wait(call, self._submit(call))

    def _submit(self, call: Any) -> dict[int, Any]:
        return {r: call(r, h) for r, h in enumerate(self._handles)}

    def _wait(self, call: Any, submitted: dict[int, Any]) -> list[dict[str, Any]]:
        """The results of ``submitted`` (runner -> object ref of ``call(r, handle)``): one
        ``ray.get`` of all when every runner answers, else runner by runner, recovering a runner
        that died or restarted and calling it again."""
        ray = self._ray
        from mtrl.agents.base import NonFiniteActionError

        refs = dict(submitted)
        out: dict[int, dict[str, Any]] = {}
        with contextlib.suppress(ray.exceptions.RayActorError):
            results = ray.get([refs[r] for r in range(self.num_runners)])
            if all(res["status"] == "ok" for res in results):
                return results  # the common case: one wait for all runners
        lost = [0] * self.num_runners
        while refs:
            r = next(iter(refs))
            try:
                res = ray.get(refs[r])
            except ray.exceptions.RayActorError as e:
                res = {"status": "died", "error": one_line(e, 160)}
            status = res["status"]
            if status in ("died", "fresh"):
                lost[r] += 1
                if lost[r] > 3:
                    raise CollectorError(f"runner {r}{self._tasks_text(r)} was lost {lost[r]} "
                                         "times in a row; giving up") from None
                self._recover(r, res.get("error") or "its process was restarted")
                refs[r] = call(r, self._handles[r])
                continue
            del refs[r]
            if status == "nonfinite":
                raise NonFiniteActionError(f"runner {r}: {res['error']}")
            if status != "ok":
                raise CollectorError(f"runner {r}{self._tasks_text(r)}: {res['error']}")
            out[r] = res
        return [out[r] for r in range(self.num_runners)]

    def _recover(self, r: int, why: str) -> None:
        """Runner ``r`` lost its state (its process died and Ray restarted it, rebuilding its
        envs): reset its envs with fresh seeds and count the restart."""
        ray = self._ray
        self.restarts[r] += 1
        self._restarts_here[r] += 1
        limit = "no limit" if self.max_restarts < 0 else f"max_restarts={self.max_restarts}"
        if 0 <= self.max_restarts < self._restarts_here[r]:
            raise CollectorError(f"runner {r}{self._tasks_text(r)} died more often than Ray "
                                 f"restarts it (collector.{limit}): {why}")
        print(f"warning: env runner {r}{self._tasks_text(r)} was lost ({why}); Ray restarted "
              f"it (restart {self.restarts[r]}, {limit}): its envs start new episodes with "
              "fresh seeds and it collects its share of this chunk again", file=sys.stderr,
              flush=True)
        h = self._handles[r]
        for attempt in range(RESET_ATTEMPTS):
            try:
                res = ray.get(h.reset.remote(self._reset_seeds(r),
                                             act_seed(self._seed, r, self.restarts[r])))
                break
            except ray.exceptions.ActorUnavailableError as e:  # still restarting
                if attempt == RESET_ATTEMPTS - 1:
                    raise CollectorError(f"runner {r}{self._tasks_text(r)} did not come back: "
                                         f"{one_line(e, 160)}") from None
                time.sleep(1.0)
            except ray.exceptions.RayActorError as e:
                raise CollectorError(f"runner {r}{self._tasks_text(r)} died and was not "
                                     f"restarted (collector.{limit}): {one_line(e, 160)}") from None
        if res["status"] != "ok":
            raise CollectorError(f"runner {r}{self._tasks_text(r)}: {res['error']}")

    def runner_pids(self) -> list[int]:
        """The process id of every runner (on its node)."""
        return [int(p) for p in self._ray.get([h.pid.remote() for h in self._handles])]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The learner's side (publish schedule, weights, restarts), every runner's state and,
        with prefetch, the chunk in flight (waited for and held back for the next
        :meth:`collect`: saving does not change what is collected)."""
        if self._inflight is not None:
            req, self._inflight = self._inflight, None
            self._ready = (req.n, req.mode, self._gather(req))
        runners = [o["state"] for o in self._call_all(lambda r, h: h.state.remote())]
        pending = None
        if self._ready is not None:
            n, mode, tr = self._ready
            pending = {"n": n, "mode": mode, "chunk": tr.to_state()}
        return {
            "kind": "ray",
            "pending": pending,
            "env_ids": [list(ids) for ids in self.env_ids],
            "seed": self._seed,
            "version": self.version,
            "since_publish": self._since_publish,
            "weights": self._weights,
            "restarts": list(self.restarts),
            "runners": runners,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. The state of another collector (the in-process one,
        or another split of the envs) cannot be restored: the envs start new episodes then."""
        if state.get("kind") != "ray" or state.get("env_ids") != self.env_ids:
            print("warning: the saved env state is of another collector or split of the envs; "
                  "the envs start new episodes", file=sys.stderr)
            self.reset(seed=self.cfg.seed)
            return
        self._drop_inflight()
        self._seed = int(state["seed"])
        self.version = int(state["version"])
        self._since_publish = int(state["since_publish"])
        self.restarts = [int(c) for c in state["restarts"]]
        if state.get("weights") is not None:
            self._set_weights(state["weights"])
        saved = state["runners"]
        self._started = True
        try:
            self._call_all(lambda r, h: h.load_state.remote(saved[r]))
        except BaseException:
            self._started = False
            raise
        pending = state.get("pending")
        if pending is not None:
            self._ready = (int(pending["n"]), str(pending["mode"]),
                           Transitions.from_state(pending["chunk"]))

    def close(self) -> None:
        """Stop the runners (and the Ray session this collector started)."""
        ray = self._ray
        self._inflight = self._ready = None
        for h in self._handles:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(h, no_restart=True)
        self._handles = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False
