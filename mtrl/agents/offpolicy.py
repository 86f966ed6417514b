"""The off-policy data path: one vector step into a replay buffer, then updates on
task-stratified batches sampled from it (MT-SAC, Distral-SAC; distillation with a state buffer).

Each iteration:

1. the behaviour policy acts for ``collect_steps`` vector steps (default one): uniform random
   actions in ``[-1, 1]`` during the first ``warmup_steps`` env steps (Haarnoja et al. 2018's
   initial exploration; Meta-World+ MT-SAC), the agent's stochastic policy afterwards (or, for
   distillation, the teachers and/or the student);
2. the steps' transitions are stored (``next_obs`` is the true next observation, also at a
   time limit; ``terminated`` is 1 only for true terminals);
3. ``updates_per_step`` updates for every one of those vector steps past the warm-up, each on
   a fresh batch of ``per_task`` samples of every task.

With ``collect_steps`` > 1 the updates per env step are the same and the data are acted by one
policy per chunk, as Ape-X's actors (Horgan et al. 2018, "Distributed Prioritized Experience
Replay", Sec. 3) send their experience in chunks: a chunk that starts in the warm-up is uniform
throughout (the warm-up rounds up to whole chunks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.agents.base import Iteration, NonFiniteActionError, Reference
from mtrl.collect.base import Collector, Transitions


class UniformWarmup:
    """Behaviour of an off-policy agent: uniform random actions in ``[-1, 1]^d`` while
    ``warm`` is set, the agent's stochastic policy afterwards (non-finite actions raise
    :class:`NonFiniteActionError`)."""

    def __init__(self, agent: Any, rng: np.random.Generator, action_dim: int) -> None:
        self.agent = agent
        self.rng = rng
        self.action_dim = action_dim
        self.warm = True

    def act(self, obs: np.ndarray, task_id: np.ndarray) -> np.ndarray:
        if self.warm:
            a = self.rng.uniform(-1.0, 1.0, (obs.shape[0], self.action_dim))
            return a.astype(np.float32)
        action = self.agent.act(obs, task_id)
        if not np.isfinite(action).all():
            raise NonFiniteActionError("the policy produced non-finite actions")
        return action


class ReplayDataPath:
    """See the module docstring. ``store(transitions)`` writes a collected chunk into
    ``buffer``; ``behaviour`` acts (its ``warm`` flag is set before each step)."""

    def __init__(
        self,
        agent: Any,
        buffer: Any,
        behaviour: Any,
        store: Callable[[Transitions], None],
        *,
        num_envs: int,
        warmup_steps: int,
        updates_per_step: int,
        per_task: int,
        collect_steps: int = 1,
        rng: np.random.Generator,
        save_with_checkpoint: bool = True,
        references: dict[str, Reference] | None = None,
    ) -> None:
        self.agent = agent
        self.buffer = buffer
        self.behaviour = behaviour
        self.store = store
        self.num_envs = num_envs
        self.warm_vec = math.ceil(warmup_steps / num_envs)
        self.updates_per_step = updates_per_step
        self.collect_steps = int(collect_steps)
        self.per_task = per_task
        self.rng = rng
        self.save_with_checkpoint = save_with_checkpoint
        self._references = references or {}

    @property
    def vec_steps_per_iteration(self) -> int:
        return self.collect_steps

    def iterate(self, collector: Collector, vec_step: int) -> Iteration:
        self.behaviour.warm = vec_step < self.warm_vec
        tr = collector.collect(self.behaviour, self.collect_steps)
        self.store(tr)
        metrics = []
        # Vector step t is followed by updates once t + 1 >= warm_vec (one step: as before).
        past_warmup = vec_step + tr.num_steps - max(vec_step, self.warm_vec - 1)
        for _ in range(max(0, past_warmup) * self.updates_per_step):
            metrics.append(self.agent.update(self.buffer.sample(self.per_task)))
        return Iteration(tr, metrics)

    def env_steps_at_update(self, update: int) -> int:
        return (max(1, self.warm_vec) + update // self.updates_per_step) * self.num_envs

    def storage_writer(self) -> Callable[[Path], Any] | None:
        return self.buffer.save if self.save_with_checkpoint else None

    def load_storage(self, path: Path) -> None:
        self.buffer.load(path)

    def state_dict(self) -> dict[str, Any]:
        return {"warmup_rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["warmup_rng"]

    def references(self) -> dict[str, Reference]:
        return dict(self._references)


def store_transitions(buffer: Any) -> Callable[[Transitions], None]:
    """``store`` for a :class:`~mtrl.data.replay.MultiTaskReplayBuffer`."""

    def store(tr: Transitions) -> None:
        for t in range(tr.num_steps):
            buffer.add(tr.obs[t], tr.action[t], tr.reward[t], tr.next_obs[t], tr.terminated[t],
                       tr.task_id)

    return store


def store_states(buffer: Any) -> Callable[[Transitions], None]:
    """``store`` for a :class:`~mtrl.data.states.StateBuffer` (observations only)."""

    def store(tr: Transitions) -> None:
        for t in range(tr.num_steps):
            buffer.add(tr.obs[t], tr.task_id)

    return store
