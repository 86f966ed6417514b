"""On-policy rollout storage on the learner's device, and n-step / GAE returns.

Layout: ``[num_steps (+1), num_envs, ...]`` tensors on the learner's device. Observations keep
the env's dtype (``uint8`` Atari frames stay 1 byte per pixel). Each observation crosses from
host to device exactly once: it is written straight into its storage slot, which is also the
tensor the policy acts on. Rewards and episode flags are staged in (pinned) host memory during
the rollout and cross in one copy when the rollout is finished.

:meth:`RolloutStorage.batch` returns a task-stratified :class:`RolloutBatch`: rows are ordered
task by task (all steps of task 0's envs, then task 1's, …), so per-task losses are a
``view(num_tasks, per_task)`` as for replay batches. :meth:`RolloutStorage.trajectory` returns
the rollout as collected instead (a time-major :class:`Trajectory` with the acting policy's
log-probabilities and the episode flags), for learners that compute their own targets
(V-trace, :mod:`mtrl.agents.impala`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class RolloutBatch(NamedTuple):
    """One rollout, flattened task-major. All tensors on the learner's device."""

    obs: torch.Tensor  # [B, *obs_shape] (env dtype)
    action: torch.Tensor  # [B] int64 (discrete) or [B, action_dim] float32
    value: torch.Tensor  # [B] V(s) when acting (reward units)
    returns: torch.Tensor  # [B] λ-returns G (reward units): the value targets
    task_id: torch.Tensor  # [B] int64
    num_tasks: int
    reward: torch.Tensor | None = None  # [B] the env's rewards (without agent bonuses)
    log_prob: torch.Tensor | None = None  # [B] log π_old(a|s) of the acting policy (PPO)

    @property
    def per_task(self) -> int:
        return self.returns.shape[0] // self.num_tasks

    @property
    def advantage(self) -> torch.Tensor:
        """``G − V(s)`` in reward units (the GAE advantage)."""
        return self.returns - self.value


class Trajectory(NamedTuple):
    """One rollout as it was collected, time-major ``[T, N]`` (``N`` envs, columns ordered task
    by task), for learners that compute their own value targets from it (V-trace,
    :mod:`mtrl.agents.impala`). All tensors on the learner's device."""

    obs: torch.Tensor  # [T + 1, N, *obs_shape] (env dtype); row T: the obs after the last step
    action: torch.Tensor  # [T, N] int64 (discrete) or [T, N, action_dim] float32
    behaviour_log_prob: torch.Tensor  # [T, N] log μ(a|s) of the policy that acted
    value: torch.Tensor  # [T, N] V(s) when acting (reward units)
    reward: torch.Tensor  # [T, N] the env's rewards plus any agent bonus
    terminated: torch.Tensor  # [T, N] bool: a true terminal at this step
    truncated: torch.Tensor  # [T, N] bool: the episode was cut by a time limit at this step
    truncation_value: torch.Tensor  # [T, N] V(real last obs) where truncated (else 0)
    task_id: torch.Tensor  # [N] int64, the task of each column
    num_tasks: int

    @property
    def envs_per_task(self) -> int:
        return self.task_id.shape[0] // self.num_tasks


def bootstrap_values(
    values: torch.Tensor,
    last_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    truncation_value: torch.Tensor,
) -> torch.Tensor:
    """``V̂_{t+1}``, the value that step ``t`` bootstraps from, ``[T, N]``:

    * ``0`` where the episode *terminated* at step ``t`` (a true terminal has no future);
    * ``V(s^final_{t+1})``, the value of the episode's real last observation, where it was
      *truncated* by a time limit (the future exists, the env just stopped showing it);
    * ``V(s_{t+1})`` otherwise (``last_value`` for the rollout's last step).
    """
    nxt = torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)
    nxt = torch.where(truncated, truncation_value, nxt)
    return torch.where(terminated, torch.zeros_like(nxt), nxt)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    episode_end: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalized advantage estimates (Schulman et al. 2016, "High-Dimensional Continuous
    Control Using Generalized Advantage Estimation", Eq. 16), ``[T, N]``:

        δ_t = r_t + γ V̂_{t+1} − V(s_t),        A_t = δ_t + γ λ (1 − e_t) A_{t+1},

    with ``V̂_{t+1}`` from :func:`bootstrap_values` and ``e_t`` = 1 where an episode ended at
    step ``t`` (terminated *or* truncated: the next row belongs to a new episode). ``λ = 1``
    gives the n-step returns of A3C (Mnih et al. 2016, Algorithm S3) minus V: each step
    bootstraps from the rollout's last state, or from its episode's end. The λ-return (value
    target) is ``A_t + V(s_t)``.
    """
    delta = rewards + gamma * next_values - values
    not_end = (~episode_end).to(rewards.dtype)
    adv = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = delta[t] + gamma * lam * not_end[t] * running
        adv[t] = running
    return adv


class RolloutStorage:
    """Fixed-length rollouts of a vector env; see the module docstring.

    ``task_ids``: the task of each env. Every task must have the same number of envs (the
    batch is stratified); envs need not be sorted by task.
    """

    def __init__(
        self,
        num_steps: int,
        task_ids: np.ndarray,
        obs_shape: tuple[int, ...],
        *,
        obs_dtype: torch.dtype = torch.float32,
        action_shape: tuple[int, ...] = (),
        discrete: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        task_ids = np.asarray(task_ids, dtype=np.int64)
        counts = np.bincount(task_ids)
        if (counts == 0).any() or len(set(counts.tolist())) != 1:
            raise ValueError(f"every task needs the same number of envs, got counts {counts}")
        self.num_steps = int(num_steps)
        self.num_envs = len(task_ids)
        self.num_tasks = len(counts)
        self.device = torch.device(device)
        t, n = self.num_steps, self.num_envs
        dev = self.device
        self.obs = torch.zeros((t + 1, n, *obs_shape), dtype=obs_dtype, device=dev)
        self.action = torch.zeros((t, n, *action_shape),
                                  dtype=torch.long if discrete else torch.float32, device=dev)
        self.value = torch.zeros((t, n), device=dev)
        self.truncation_value = torch.zeros((t, n), device=dev)
        # Reward terms computed by the agent on the device (Distral's regularizer), if any.
        self.bonus = torch.zeros((t, n), device=dev)
        # log π(a|s) of the acting policy, for agents that need it (PPO's ratios).
        self.log_prob = torch.zeros((t, n), device=dev)
        # Rewards, terminated, truncated: staged on the host, one copy per rollout.
        pin = dev.type == "cuda"
        self._host = torch.zeros((3, t, n), dtype=torch.float32, pin_memory=pin)
        self._host_np = self._host.numpy()
        order = np.argsort(task_ids, kind="stable")
        self._order = torch.as_tensor(order, device=dev)
        self._sorted = bool((order == np.arange(n)).all())
        self.task_id = torch.as_tensor(task_ids, device=dev)
        self._batch_task_id = self.task_id[self._order].repeat_interleave(t)
        self.step = 0
        self.started = False

    def start(self, obs: np.ndarray) -> None:
        """Observations of the first step (after a reset or a resume)."""
        self.obs[0].copy_(torch.as_tensor(obs))
        self.step = 0
        self.started = True

    def current_obs(self) -> torch.Tensor:
        return self.obs[self.step]

    def add(
        self,
        action: torch.Tensor,
        value: torch.Tensor,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_obs: np.ndarray,
        bonus: torch.Tensor | None = None,
        log_prob: torch.Tensor | None = None,
    ) -> None:
        """Record step ``self.step``: what the policy did and what the env returned.
        ``next_obs`` is what the policy sees next (the first observation of a new episode
        where one ended). ``bonus``: a device tensor ``[num_envs]`` added to the env reward
        (e.g. Distral's ``(α/β) log π0 − (1/β) log πi``). ``log_prob``: ``log π(a|s)`` of the
        action taken, ``[num_envs]`` (PPO)."""
        s = self.step
        if s >= self.num_steps:
            raise RuntimeError("rollout is full: call batch() and after_update() first")
        self.action[s].copy_(action)
        self.value[s].copy_(value)
        self._host_np[0, s] = reward
        self._host_np[1, s] = terminated
        self._host_np[2, s] = truncated
        self.truncation_value[s].zero_()
        if bonus is None:
            self.bonus[s].zero_()
        else:
            self.bonus[s].copy_(bonus)
        if log_prob is None:
            self.log_prob[s].zero_()
        else:
            self.log_prob[s].copy_(log_prob)
        self.obs[s + 1].copy_(torch.as_tensor(next_obs))
        self.step = s + 1

    def set_truncation_value(self, mask: np.ndarray, value: torch.Tensor) -> None:
        """``V`` of the real last observations of the envs in ``mask`` that were truncated on
        the step just added."""
        idx = torch.as_tensor(np.flatnonzero(mask), device=self.device)
        self.truncation_value[self.step - 1].index_copy_(0, idx, value)

    def fill(self, *, obs: np.ndarray, last_obs: np.ndarray, action: np.ndarray,
             log_prob: np.ndarray, reward: np.ndarray, terminated: np.ndarray,
             truncated: np.ndarray, truncation_value: np.ndarray) -> None:
        """Write a whole rollout that remote actors collected (``[T, N, ...]`` arrays, envs in
        the storage's order; ``last_obs`` ``[N, ...]``: what the policy saw after the last
        step): what :meth:`add` would have recorded step by step, in one copy per field. The
        values of the acting policy are not sent (0 here): learners of remote rollouts
        evaluate ``V`` themselves (V-trace)."""
        t, n = self.num_steps, self.num_envs
        if reward.shape != (t, n):
            raise ValueError(f"a rollout of shape {reward.shape} does not fit a storage of "
                             f"{t} steps x {n} envs")
        dev = self.device
        self.obs[:t].copy_(torch.as_tensor(obs, device=dev))
        self.obs[t].copy_(torch.as_tensor(last_obs, device=dev))
        self.action.copy_(torch.as_tensor(action, device=dev).view_as(self.action))
        self.log_prob.copy_(torch.as_tensor(log_prob, dtype=torch.float32, device=dev))
        self.truncation_value.copy_(torch.as_tensor(truncation_value, dtype=torch.float32,
                                                    device=dev))
        self.value.zero_()
        self.bonus.zero_()
        self._host_np[0] = reward
        self._host_np[1] = terminated
        self._host_np[2] = truncated
        self.step = t
        self.started = True

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def batch(self, last_value: torch.Tensor, gamma: float, lam: float) -> RolloutBatch:
        """λ-returns of the finished rollout, flattened task-major. ``last_value``: ``V`` of
        the observation after the last step, ``[num_envs]``."""
        if not self.full:
            raise RuntimeError(f"rollout has {self.step} of {self.num_steps} steps")
        host = self._host.to(self.device, non_blocking=True)
        rewards, terminated, truncated = host[0] + self.bonus, host[1] > 0.5, host[2] > 0.5
        nxt = bootstrap_values(self.value, last_value, terminated, truncated,
                               self.truncation_value)
        adv = gae(rewards, self.value, nxt, terminated | truncated, gamma, lam)
        returns = adv + self.value
        t = self.num_steps

        def flat(x: torch.Tensor) -> torch.Tensor:
            # [T, N, ...] → [N, T, ...] with envs sorted by task → [N·T, ...], task-major.
            if not self._sorted:
                x = x.index_select(1, self._order)
            return x.transpose(0, 1).reshape(self.num_envs * t, *x.shape[2:])

        return RolloutBatch(
            obs=flat(self.obs[:-1]),
            action=flat(self.action),
            value=flat(self.value),
            returns=flat(returns),
            task_id=self._batch_task_id,
            num_tasks=self.num_tasks,
            reward=flat(host[0]),
            log_prob=flat(self.log_prob),
        )

    def trajectory(self) -> Trajectory:
        """The finished rollout, time-major, envs ordered task by task (no returns: the learner
        computes its own targets). Observations, actions and values are views of the storage
        when the envs are already sorted by task: use them before :meth:`after_update`."""
        if not self.full:
            raise RuntimeError(f"rollout has {self.step} of {self.num_steps} steps")
        host = self._host.to(self.device, non_blocking=True)

        def cols(x: torch.Tensor) -> torch.Tensor:
            return x if self._sorted else x.index_select(1, self._order)

        return Trajectory(
            obs=cols(self.obs), action=cols(self.action),
            behaviour_log_prob=cols(self.log_prob), value=cols(self.value),
            reward=cols(host[0] + self.bonus), terminated=cols(host[1] > 0.5),
            truncated=cols(host[2] > 0.5), truncation_value=cols(self.truncation_value),
            task_id=self.task_id[self._order], num_tasks=self.num_tasks,
        )

    def after_update(self) -> None:
        """Start the next rollout where this one ended."""
        self.obs[0].copy_(self.obs[-1])
        self.step = 0
