"""Env stepping that overlaps the learner's update: :class:`PipelinedCollector`
(``collector.name=pipelined``), the collector seam (:mod:`mtrl.collect.base`) with the envs in
worker processes that step while the learner updates.

The idea is the actor-learner overlap of IMPALA (Espeholt et al. 2018, "IMPALA: Scalable
Distributed Deep-RL with Importance Weighted Actor-Learner Architectures") in the form of Sample
Factory's double-buffered sampling (Petrenko et al. 2020, "Sample Factory: Egocentric 3D Control
from Pixels at 100000 FPS with Asynchronous Reinforcement Learning", Sec. 3.2): the envs work on
the next step while the learner works on the last one, so that an iteration costs
``max(env step, update)`` instead of their sum.

Design:

* **Workers.** ``collector.workers`` processes (started with ``spawn``: nothing of the learner
  — CUDA, thread pools, replay memory — is inherited) each build their contiguous share of the
  training envs with :func:`mtrl.envs.make_env` (``tasks=``: one entry per env, the same slices
  and seeds as the Ray runners of :mod:`mtrl.collect.ray`; one worker builds the whole env) and
  step it with an in-process :class:`~mtrl.collect.VectorCollector`, so episode statistics,
  task ids, action scaling and ``final_obs`` at autoresets are exactly what the in-process
  collector produces. Rewards, flags, observations and episode statistics come back through one
  shared-memory block (each worker writes its rows); the pipes carry only the commands, the
  actions and one-line errors.
* **The pipeline.** ``collect(policy, n)`` takes the step that was in flight (or, right after
  a reset, acts and steps at once), then, for each of the ``n`` steps, computes the next actions
  from ``policy`` on the new observations and sends them to the workers — the last of them
  *before returning*, so that the workers step while the learner updates on what was returned.
  The learner only waits for the envs when a step takes longer than what it does in between.
* **Policy lag: one update.** The actions of vector step ``t + 1`` are computed from the
  observations of step ``t`` before the update that follows step ``t``: the first step of every
  chunk was acted on by the policy (and weights) of the previous ``collect`` call, one update
  behind the sequential collector; every chunk records the oldest policy version that acted
  (``Transitions.policy_version``, from ``policy.version`` where the policy has one). Off-policy
  learners (MT-SAC, Distral-SAC, distillation) learn from replay, where data one update old is
  the rule anyway; on-policy data paths (``policy.observe``: their rollout storage is written by
  the policy being updated) are refused (:func:`mtrl.config.validate` and :meth:`collect`).
* **Warm-up.** The replay data path's uniform actions are drawn in the learner, by the policy
  handed to ``collect`` (:class:`~mtrl.agents.offpolicy.UniformWarmup`), from the data path's
  own seeded generator, as in process. The step in flight when the warm-up ends was drawn while
  it lasted: the warm-up is one vector step longer than with the sequential collector.
* **Faults.** Every wait for the workers watches their pipes *and* their process sentinels,
  with a timeout: an env that raises is a one-line :class:`~mtrl.errors.CollectorError` naming
  the worker's tasks (``env worker 1 (goal-2, goal-3): ValueError: ...``), a worker process that
  died (killed, segfault) one naming its tasks and signal, a worker that does not answer within
  ``timeout_s`` one too — never a hang. The collector is unusable afterwards; :meth:`close` ends
  the other workers.
* **Checkpoints.** :meth:`state_dict` first waits for the step in flight and keeps its result
  (the next ``collect`` returns it: saving does not change what is collected); it holds the
  envs' state after that step (random generators; toy envs: their episodes in progress), the
  current observations and the pending step. Envs that restore exactly (toy) resume the exact
  episodes and the pending step, so that a resumed run continues exactly; the others
  (Meta-World: physics is not checkpointed) start new episodes on their restored random streams,
  and the pending step is dropped, as with the in-process collector.
* **Processes.** :meth:`close` asks the workers to exit, joins them, kills what is left and
  frees the shared memory; a collector that is garbage-collected or left at interpreter exit is
  closed by a finalizer, and a worker whose learner died exits when its pipe closes. Workers
  ignore SIGINT: Ctrl-C belongs to the learner, which still needs them to save a checkpoint.

Scripts that train with this collector need the usual ``if __name__ == "__main__":`` guard
(``spawn`` imports the main module in every worker).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import signal
import sys
import time
import weakref
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtrl.collect.base import EnvSpec, Step, Transitions
from mtrl.collect.ray import one_line, split_envs
from mtrl.errors import CollectorError

if TYPE_CHECKING:
    from mtrl.config import EnvConfig, TrainConfig

#: Seconds the workers may take to start (import, build their envs) before the learner gives up.
START_TIMEOUT_S = 900.0
#: Seconds a worker may take to answer one command (a vector step, a reset, its state).
STEP_TIMEOUT_S = 300.0
#: Seconds :meth:`PipelinedCollector.close` waits for the workers to exit before killing them.
CLOSE_TIMEOUT_S = 10.0

LAG_TEXT = ("one update: the actions of vector step t+1 are computed from the observations of "
            "step t before the update that follows step t (the envs step during the update); "
            "the first step of every collect call was acted on by the policy of the previous "
            "call")
WARMUP_TEXT = ("uniform actions drawn in the learner (the data path's generator); the step in "
               "flight when the warm-up ends was drawn during it: one vector step longer than "
               "with the vector collector")


# ----------------------------------------------------------------------------------------------
# The shared-memory block: one array per field, [num_envs, ...], each worker writes its rows


def _fields(num_envs: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype[Any]
            ) -> list[tuple[str, tuple[int, ...], str]]:
    n = num_envs
    obs = np.dtype(obs_dtype).str
    return [
        ("reward", (n,), "<f4"),
        ("terminated", (n,), "|b1"),
        ("truncated", (n,), "|b1"),
        ("next_obs", (n, *obs_shape), obs),  # the true next observation (final_obs)
        ("next_policy_obs", (n, *obs_shape), obs),  # what the policy sees next
        ("ep_mask", (n,), "|b1"),
        ("ep_return", (n,), "<f8"),
        ("ep_length", (n,), "<i8"),
        ("ep_success", (n,), "|b1"),
    ]


def _layout(fields: list[tuple[str, tuple[int, ...], str]]
            ) -> tuple[list[tuple[str, int, tuple[int, ...], str]], int]:
    """Byte offsets (8-aligned) of the fields, and the block's size."""
    out, offset = [], 0
    for name, shape, dtype in fields:
        out.append((name, offset, shape, dtype))
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        offset += (size + 7) // 8 * 8
    return out, max(offset, 8)


def _views(buf: Any, layout: list[tuple[str, int, tuple[int, ...], str]],
           rows: slice = slice(None)) -> dict[str, np.ndarray]:
    return {name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=offset)[rows]
            for name, offset, shape, dtype in layout}


# ----------------------------------------------------------------------------------------------
# The worker process


def _worker_main(conn: Connection, env_cfg: EnvConfig, seed: int, tasks: list[int] | None,
                 plugins: list[str]) -> None:
    """Body of one env worker: build the envs, then serve commands until ``close`` or until
    the learner's end of the pipe closes. Every answer is ``(status, payload)`` with status
    ``ok`` or ``error`` (a one-line message)."""
    # Ctrl-C goes to the whole process group; the learner decides (it saves a checkpoint,
    # which needs the workers' env state).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # the learner owns the cores' thread pools
    try:
        if plugins:
            from mtrl.plugins import load_plugins

            load_plugins(plugins)
        from mtrl.collect.vector import VectorCollector
        from mtrl.envs import make_env

        env = make_env(env_cfg, seed=seed, tasks=tasks)
        collector = VectorCollector(env)
    except BaseException as e:  # reported to the learner, on one line
        conn.send(("error", f"building its envs: {one_line(e)}"))
        conn.close()
        return
    worker = _Worker(collector, env)
    try:
        conn.send(("ok", EnvSpec.of(env)))
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            try:
                answer: tuple[str, Any] = ("ok", worker.serve(msg))
            except Exception as e:
                answer = ("error", one_line(e))
            conn.send(answer)
    except (EOFError, OSError):  # the learner is gone (its end of the pipe closed)
        pass
    finally:
        worker.close()


class _Worker:
    """The commands a worker serves, on its envs and its rows of the shared block."""

    def __init__(self, collector: Any, env: Any) -> None:
        self.collector = collector
        self.env = env
        self.shm: shared_memory.SharedMemory | None = None
        self.views: dict[str, np.ndarray] = {}

    def serve(self, msg: tuple[Any, ...]) -> Any:
        """The payload of the answer to one command (raises on failure)."""
        cmd, views = msg[0], self.views
        if cmd == "attach":
            _, name, layout, lo, hi = msg
            self.shm = shared_memory.SharedMemory(name=name)
            self.views = _views(self.shm.buf, layout, slice(lo, hi))
            return None
        if cmd == "step":
            _write_step(views, self.collector.step(msg[1]))
            return None
        if cmd == "reset":
            views["next_policy_obs"][:] = self.collector.reset(seed=msg[1])
            return None
        if cmd == "state":
            return self.env.state_dict()
        if cmd == "load":
            _, env_state, obs = msg
            state: dict[str, Any] = {"env": env_state}
            if obs is not None:
                state["obs"] = torch.from_numpy(obs)
            self.collector.load_state_dict(state)
            views["next_policy_obs"][:] = self.collector.obs
            return bool(self.env.restores_exactly)
        raise ValueError(f"unknown command {cmd!r}")

    def close(self) -> None:
        self.views = {}  # the views must go before the block can be closed
        if self.shm is not None:
            self.shm.close()
        with contextlib.suppress(Exception):  # the worker is exiting anyway
            self.env.close()


def _write_step(views: dict[str, np.ndarray], s: Step) -> None:
    views["reward"][:] = s.reward
    views["terminated"][:] = s.terminated
    views["truncated"][:] = s.truncated
    views["next_obs"][:] = s.next_obs
    assert s.next_policy_obs is not None
    views["next_policy_obs"][:] = s.next_policy_obs
    if s.episode_mask is None or s.episode is None:
        views["ep_mask"][:] = False
        return
    mask = np.asarray(s.episode_mask, dtype=bool)
    views["ep_mask"][:] = mask
    # Only the rows of finished episodes are read (Episodes.from_steps); the others are zeroed
    # so that the block never shows a stale episode.
    views["ep_return"][:] = np.where(mask, s.episode["return"], 0.0)
    views["ep_length"][:] = np.where(mask, s.episode["length"], 0)
    views["ep_success"][:] = mask & np.asarray(s.episode["success"], dtype=bool)


# ----------------------------------------------------------------------------------------------
# The learner's side


class _Resources:
    """What must be released even if :meth:`PipelinedCollector.close` is never called (held by
    a ``weakref.finalize``, which must not hold the collector itself)."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.shm: shared_memory.SharedMemory | None = None
        self.views: dict[str, np.ndarray] = {}
        self.grace_s = CLOSE_TIMEOUT_S

    def release(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):  # already gone or closed
                conn.send(("close",))
        deadline = time.monotonic() + self.grace_s
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():  # stuck in an env step: no more waiting
                p.kill()
                p.join(5.0)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        self.views.clear()  # the views must go before the block can be closed
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()
            self.shm = None


def _release(res: _Resources) -> None:
    res.release()


class PipelinedCollector:
    """Env workers in subprocesses that step while the learner updates; see the module
    docstring for the design.

    **Policy lag: one update.** ``collect(policy, n)`` returns the steps that were in flight
    and sends the actions of the next step, computed by ``policy`` from the new observations,
    to the workers before it returns: the actions of vector step ``t + 1`` come from the policy
    as it was *before* the update that follows step ``t``. Given the same actions, the
    transitions, episodes, task ids and ``final_obs`` are exactly those of
    :class:`~mtrl.collect.VectorCollector` (for any number of workers where every sub-env has
    its own generator, as in Meta-World; the toy envs draw all starts from one generator, so
    there only one worker reproduces the in-process env).

    ``cfg``: the run's config (``cfg.collector.workers``, ``cfg.env``, ``cfg.seed``,
    ``cfg.plugins``, which every worker imports). ``timeout_s``: how long a worker may take to
    answer one command before the collector gives up on it.
    """

    def __init__(self, cfg: TrainConfig, *, timeout_s: float = STEP_TIMEOUT_S,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        from mtrl import config as C

        self.cfg = cfg
        self.timeout_s = float(timeout_s)
        self.num_workers = int(cfg.collector.workers)
        self.task_names = C.task_names(cfg.env)
        layout = np.repeat(np.arange(len(self.task_names)), cfg.env.envs_per_task)
        self.env_ids = split_envs(len(layout), self.num_workers)
        # One worker builds the whole env, whatever builds it (also envs without task subsets).
        plan: list[list[int] | None] = (
            [None] if self.num_workers == 1 else
            [[int(layout[i]) for i in ids] for ids in self.env_ids])
        self._worker_tasks = [self.task_names if tasks is None
                              else [self.task_names[k] for k in sorted(set(tasks))]
                              for tasks in plan]
        self._res = _Resources()
        # Released when closed, garbage-collected, or at interpreter exit — before
        # multiprocessing's own exit handler, which would wait forever for the (non-daemon:
        # they may start processes of their own) workers: atexit runs handlers last-in
        # first-out, and this one is registered after multiprocessing's.
        self._finalizer = weakref.finalize(self, _release, self._res)
        self._finalizer.atexit = False
        atexit.register(self._finalizer)
        self._error: str | None = None
        self._started = False
        self.obs: np.ndarray | None = None
        # The step whose actions were sent: (obs it starts from, actions, policy version).
        self._inflight: tuple[np.ndarray, np.ndarray, int] | None = None
        # A step already taken and not yet returned (waited for by state_dict, or restored).
        self._ready: tuple[Step, int] | None = None
        self._wait_s = 0.0
        self._wait_steps = 0
        try:
            self._start(cfg, plan, start_timeout_s)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ start-up
    def _start(self, cfg: TrainConfig, plan: list[list[int] | None], timeout: float) -> None:
        ctx = mp.get_context("spawn")
        res = self._res
        for w, tasks in enumerate(plan):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, name=f"mtrl-env-worker-{w}",
                               args=(child, cfg.env, int(cfg.seed), tasks, list(cfg.plugins)))
            proc.start()
            child.close()  # the worker's end lives in the worker: EOF here when it dies
            res.procs.append(proc)
            res.conns.append(parent)
        specs: list[EnvSpec] = self._wait_all("starting (building its envs)", timeout)
        if self.num_workers == 1:
            self.env_ids = [list(range(specs[0].num_envs))]
        for w, (s, tasks) in enumerate(zip(specs, plan, strict=True)):
            if tasks is not None and s.task_ids.tolist() != tasks:
                raise CollectorError(f"env worker {w} built envs of tasks {s.task_ids.tolist()}, "
                                     f"not the {tasks} it was given")
            if s.obs_space != specs[0].obs_space or s.action_space != specs[0].action_space:
                raise CollectorError(f"env worker {w}'s envs have other spaces than worker 0's")
        first = specs[0]
        task_ids = np.concatenate([s.task_ids for s in specs]).astype(np.int64)
        self._spec = EnvSpec(list(first.task_names), task_ids, first.obs_space,
                             first.action_space, dict(first.benchmark),
                             {k: v for s in specs for k, v in s.teacher_action_maps.items()},
                             first.score_fn)
        obs_dtype = np.dtype(np.uint8 if first.obs_space.dtype == np.uint8 else np.float32)
        layout, size = _layout(_fields(self.num_envs, first.obs_shape, obs_dtype))
        res.shm = shared_memory.SharedMemory(create=True, size=size)
        res.views = _views(res.shm.buf, layout)
        for w, ids in enumerate(self.env_ids):
            self._send(w, ("attach", res.shm.name, layout, ids[0], ids[-1] + 1),
                       "attaching the shared memory")
        self._wait_all("attaching the shared memory", timeout)

    # ------------------------------------------------------------------ the Collector protocol
    @property
    def spec(self) -> EnvSpec:
        return self._spec

    @property
    def task_ids(self) -> np.ndarray:
        return self._spec.task_ids

    @property
    def num_envs(self) -> int:
        return int(sum(len(ids) for ids in self.env_ids))

    @property
    def started(self) -> bool:
        return self._started

    @property
    def info(self) -> dict[str, Any]:
        """What the run's metadata records about the collector."""
        return {
            "name": "pipelined",
            "workers": self.num_workers,
            "start_method": "spawn",
            "envs": self.num_envs,
            "envs_per_worker": [len(ids) for ids in self.env_ids],
            "tasks_per_worker": self._worker_tasks,
            "policy_lag": LAG_TEXT,
            "warmup": WARMUP_TEXT,
            "seeds": "worker envs reset with seed + global env index (one worker: the seed, "
                     "as the vector collector)",
        }

    def metrics(self) -> dict[str, float]:
        """Scalars the training loop logs with its throughput: ``perf/env_wait_ms``, the mean
        time per vector step the learner waited for the workers since the last call (about 0
        while the envs are faster than what the learner does in between)."""
        mean = 1e3 * self._wait_s / max(1, self._wait_steps)
        self._wait_s, self._wait_steps = 0.0, 0
        return {"perf/env_wait_ms": mean}

    def worker_pids(self) -> list[int]:
        """The process id of every worker."""
        return [int(p.pid) for p in self._res.procs]

    def reset(self, seed: int | list[int] | None = None) -> np.ndarray:
        """New episodes everywhere (a step in flight is waited for and dropped). ``seed``: an
        int (worker envs seeded with ``seed + global env index``, gymnasium's convention), one
        per env, or None."""
        self._usable()
        self._drop_inflight()
        for w, ids in enumerate(self.env_ids):
            self._send(w, ("reset", self._worker_seed(seed, ids)), "resetting its envs")
        self._wait_all("resetting its envs", self.timeout_s)
        self.obs = self._res.views["next_policy_obs"].copy()
        self._ready = None
        self._started = True
        return self.obs

    def _worker_seed(self, seed: int | list[int] | None, ids: list[int]) -> Any:
        if seed is None or self.num_workers == 1:
            return seed
        if isinstance(seed, int | np.integer):
            return [int(seed) + i for i in ids]
        return [int(seed[i]) for i in ids]

    def collect(self, policy: Any, n: int) -> Transitions:
        """``n`` vector steps: the step in flight first, then ``n - 1`` more; the actions of
        the step after them are computed by ``policy`` and sent before returning."""
        self._usable()
        if not self._started:
            raise RuntimeError("reset() the collector before collecting")
        if n < 1:
            raise ValueError(f"n={n}: collect at least one vector step")
        if callable(getattr(policy, "observe", None)):
            raise TypeError(
                f"the pipelined collector acts one update ahead; {type(policy).__name__} "
                "writes each step into the rollout of the policy being updated (observe): "
                "use the vector collector")
        steps: list[Step] = []
        versions: list[int] = []
        for _ in range(n):
            if self._ready is None and self._inflight is None:
                self._act(policy)  # nothing in flight (after a reset): step at once
            step, version = self._take()
            steps.append(step)
            versions.append(version)
            self._act(policy)  # the next step runs while the caller updates
        return Transitions.from_steps(steps, min(versions))

    def _act(self, policy: Any) -> None:
        """Compute the actions of the next step and send them to the workers."""
        assert self.obs is not None
        action = np.array(policy.act(self.obs, self.task_ids))  # a copy: held across updates
        version = int(getattr(policy, "version", 0))
        for w, ids in enumerate(self.env_ids):
            self._send(w, ("step", action[ids[0]:ids[-1] + 1]), "stepping its envs")
        self._inflight = (self.obs, action, version)

    def _take(self) -> tuple[Step, int]:
        """The next step: the one kept by :meth:`state_dict` or restored, else the one in
        flight (waited for)."""
        if self._ready is not None:
            out, self._ready = self._ready, None
            return out
        assert self._inflight is not None
        obs, action, version = self._inflight
        t0 = time.perf_counter()
        self._wait_all("stepping its envs", self.timeout_s)
        self._wait_s += time.perf_counter() - t0
        self._wait_steps += 1
        self._inflight = None
        v = self._res.views
        mask = v["ep_mask"].copy()
        ended = bool(mask.any())
        step = Step(
            obs=obs,
            action=action,
            reward=v["reward"].copy(),
            next_obs=v["next_obs"].copy(),
            terminated=v["terminated"].copy(),
            truncated=v["truncated"].copy(),
            task_id=self.task_ids,
            next_policy_obs=v["next_policy_obs"].copy(),
            episode={"return": v["ep_return"].copy(), "length": v["ep_length"].copy(),
                     "success": v["ep_success"].copy()} if ended else None,
            episode_mask=mask if ended else None,
        )
        self.obs = step.next_policy_obs
        return step, version

    def _drop_inflight(self) -> None:
        if self._inflight is not None:
            self._take()
        self._ready = None

    # ------------------------------------------------------------------ talking to the workers
    def _usable(self) -> None:
        if self._error is not None:
            raise CollectorError(self._error)
        if not self._res.procs:
            raise RuntimeError("the pipelined collector is closed")

    def _tasks_text(self, w: int) -> str:
        names = self._worker_tasks[w]
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} tasks)" if len(names) > 4 else "")
        return f" ({shown})"

    def _fail(self, message: str) -> CollectorError:
        self._error = message
        self._res.grace_s = 1.0  # a worker may be stuck: do not wait long for it on close
        return CollectorError(message)

    def _send(self, w: int, msg: tuple[Any, ...], what: str) -> None:
        try:
            self._res.conns[w].send(msg)
        except (OSError, ValueError):  # broken pipe: the worker is gone
            raise self._died(w, what) from None

    def _died(self, w: int, what: str) -> CollectorError:
        proc = self._res.procs[w]
        proc.join(1.0)
        code = proc.exitcode
        if code is None:
            how = "closed its pipe"
        elif code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        hint = ""
        if what.startswith("starting"):
            hint = ("; a script that trains with collector.name='pipelined' needs "
                    "`if __name__ == '__main__':` (workers are spawned)")
        return self._fail(f"env worker {w}{self._tasks_text(w)} {how} while {what}{hint}")

    def _wait_all(self, what: str, timeout: float) -> list[Any]:
        """The answers of all workers to the command just sent, in worker order. Watches each
        worker's pipe and its process sentinel, so that a dead worker is noticed at once."""
        res = self._res
        pending = set(range(len(res.procs)))
        out: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            ready = set(wait([res.conns[w] for w in pending]
                             + [res.procs[w].sentinel for w in pending], max(0.0, left)))
            if not ready:
                w = min(pending)
                raise self._fail(f"env worker {w}{self._tasks_text(w)} did not answer within "
                                 f"{timeout:.0f} s while {what} (a hung env?)")
            for w in sorted(pending):
                conn = res.conns[w]
                # An answer sent just before dying is still read: the pipe before the sentinel.
                if conn in ready or res.procs[w].sentinel in ready:
                    if not conn.poll():
                        raise self._died(w, what)
                    try:
                        status, payload = conn.recv()
                    except (EOFError, OSError):
                        raise self._died(w, what) from None
                    if status != "ok":
                        raise self._fail(f"env worker {w}{self._tasks_text(w)}: {payload}")
                    out[w] = payload
                    pending.discard(w)
        return [out[w] for w in range(len(res.procs))]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The envs' state after the step in flight (waited for, and kept for the next
        :meth:`collect`), the current observations and that pending step; tensors only."""
        self._usable()
        if self._inflight is not None:
            self._ready = self._take()
        for w in range(self.num_workers):
            self._send(w, ("state",), "saving its env state")
        envs = self._wait_all("saving its env state", self.timeout_s)
        state: dict[str, Any] = {"kind": "pipelined",
                                 "env_ids": [list(ids) for ids in self.env_ids], "envs": envs}
        if self.obs is not None:
            state["obs"] = _tensor(self.obs)
        if self._ready is not None:
            s, version = self._ready
            pending: dict[str, Any] = {"obs": s.obs, "action": s.action, "reward": s.reward,
                       "next_obs": s.next_obs, "terminated": s.terminated,
                       "truncated": s.truncated, "next_policy_obs": s.next_policy_obs}
            if s.episode_mask is not None and s.episode is not None:
                pending.update(episode_mask=s.episode_mask, ep_return=s.episode["return"],
                               ep_length=s.episode["length"], ep_success=s.episode["success"])
            state["pending"] = {k: _tensor(v) for k, v in pending.items()}
            state["pending_version"] = int(version)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: exactly for envs that restore exactly (toy: the
        episodes in progress and the pending step), otherwise new episodes on the restored
        random streams. The state of another collector or split of the envs cannot be
        restored (except the vector collector's with one worker): new episodes then."""
        self._usable()
        if state.get("kind") is None and "env" in state and self.num_workers == 1:
            state = {"kind": "pipelined", "env_ids": [list(ids) for ids in self.env_ids],
                     "envs": [state["env"]], **({"obs": state["obs"]} if "obs" in state else {})}
        if state.get("kind") != "pipelined" or state.get("env_ids") != self.env_ids:
            print("warning: the saved env state is of another collector or split of the envs; "
                  "the envs start new episodes", file=sys.stderr)
            self.reset(seed=self.cfg.seed)
            return
        self._drop_inflight()
        obs = state["obs"].numpy() if "obs" in state else None
        for w, ids in enumerate(self.env_ids):
            part = None if obs is None else np.ascontiguousarray(obs[ids[0]:ids[-1] + 1])
            self._send(w, ("load", state["envs"][w], part), "restoring its env state")
        exact = all(self._wait_all("restoring its env state", self.timeout_s))
        self._ready = None
        if exact and obs is not None:
            self.obs = obs.copy()
            if "pending" in state:
                self._ready = (_pending_step(state["pending"], self.task_ids),
                               int(state.get("pending_version", 0)))
        else:
            self.obs = self._res.views["next_policy_obs"].copy()
        self._started = True

    def close(self) -> None:
        """Stop the workers (asked to exit, killed if they do not) and free the shared
        memory; idempotent."""
        self._inflight = None
        self._ready = None
        self._finalizer()
        atexit.unregister(self._finalizer)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).copy())


def _pending_step(p: dict[str, torch.Tensor], task_ids: np.ndarray) -> Step:
    ended = "episode_mask" in p
    return Step(
        obs=p["obs"].numpy(), action=p["action"].numpy(), reward=p["reward"].numpy(),
        next_obs=p["next_obs"].numpy(), terminated=p["terminated"].numpy(),
        truncated=p["truncated"].numpy(), task_id=task_ids,
        next_policy_obs=p["next_policy_obs"].numpy(),
        episode={"return": p["ep_return"].numpy(), "length": p["ep_length"].numpy(),
                 "success": p["ep_success"].numpy()} if ended else None,
        episode_mask=p["episode_mask"].numpy() if ended else None,
    )
