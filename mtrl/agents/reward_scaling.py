"""Per-task reward scaling that fits every task's soft returns into a categorical critic's
support (BRC: Nauman et al. 2025, "Bigger, Regularized, Categorical: High-Capacity Value
Functions are Efficient Multi-Task Learners", its reward normalization, as the
``RewardNormalizer`` of the authors' code, naumix/BiggerRegularizedCategorical, computes it).

For each finished episode of task ``k`` with rewards ``r_0 … r_{T−1}`` the discounted returns
from every step are

    ``G_t = r_t + γ G_{t+1}``,  ``G_T = 0`` at a true terminal, ``G_T = r̄ / (1 − γ)`` at a time
    limit (``r̄``: the episode's mean reward, standing in for the unseen rest),

and the task keeps the largest magnitude seen, ``M_k = max over episodes and t of |G_t|`` (BRC
keeps the largest and the smallest return, ``max(G_max, |G_min|)``, which is the same number).
A sampled reward of task ``k`` is divided by

    ``d_k = (M_k + α_k · h · |H̄| / 2) / b``,  ``h = 1 / (1 − γ)``,

where ``α_k`` is the task's current temperature, ``H̄`` the target entropy (``α h |H̄| / 2``
bounds the entropy part of the soft return, as in BRC, which writes ``−α h H̄ / 2`` for its
negative ``H̄``) and ``b`` the bound the scaled returns should stay within, ``min(−v_min, v_max)``
of the support. A task with no finished episode yet keeps its raw rewards (``d_k = 1``). The
statistics come from the raw rewards the envs return (after ``env.reward_scales``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class ReturnScaler:
    """See the module docstring. ``observe`` takes collected vector steps; ``divisors`` the
    per-task ``d_k`` on the statistics' device."""

    def __init__(self, num_tasks: int, gamma: float, bound: float,
                 device: torch.device | str = "cpu") -> None:
        if not bound > 0:
            raise ValueError(f"the return bound must be > 0, got {bound}")
        self.num_tasks = num_tasks
        self.gamma = gamma
        self.bound = bound
        self.horizon = 1.0 / (1.0 - gamma)
        self.max_abs_return = np.full(num_tasks, np.nan)  # M_k (NaN: no finished episode)
        self._episodes: list[list[float]] = []  # rewards of each env's running episode
        self._m = torch.full((num_tasks,), float("nan"), device=device)

    def observe(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                task_id: np.ndarray) -> None:
        """Vector steps ``[n, N]`` of ``N`` envs of tasks ``task_id [N]``."""
        reward = np.asarray(reward, dtype=np.float64).reshape(-1, len(task_id))
        terminated = np.asarray(terminated).reshape(reward.shape)
        truncated = np.asarray(truncated).reshape(reward.shape)
        if len(self._episodes) != len(task_id):
            self._episodes = [[] for _ in task_id]
        changed = False
        for t in range(reward.shape[0]):
            for i, k in enumerate(task_id):
                self._episodes[i].append(float(reward[t, i]))
                if terminated[t, i] or truncated[t, i]:
                    m = self.episode_max_abs_return(np.array(self._episodes[i]),
                                                    bool(truncated[t, i] and not terminated[t, i]))
                    old = self.max_abs_return[k]
                    if np.isnan(old) or m > old:
                        self.max_abs_return[k] = m
                        changed = True
                    self._episodes[i] = []
        if changed:
            self._m.copy_(torch.as_tensor(self.max_abs_return, dtype=torch.float32))

    def episode_max_abs_return(self, rewards: np.ndarray, truncated: bool) -> float:
        """``max_t |G_t|`` of one episode (bootstrapped by ``r̄ / (1 − γ)`` at a time limit)."""
        g = rewards.mean() * self.horizon if truncated else 0.0
        out = 0.0
        for r in rewards[::-1]:
            g = r + self.gamma * g
            out = max(out, abs(g))
        return out

    def divisors(self, alpha: torch.Tensor, target_entropy: float) -> torch.Tensor:
        """``d_k`` for every task ``[T]`` (1 for tasks without a finished episode)."""
        d = (self._m + alpha * (self.horizon * abs(target_entropy) / 2.0)) / self.bound
        return torch.where(torch.isnan(d) | (d <= 0), torch.ones_like(d), d)

    def state_dict(self) -> dict[str, Any]:
        """The per-task statistics (running episodes start over after a reload, as the envs
        do)."""
        return {"max_abs_return": torch.tensor(self.max_abs_return, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = torch.as_tensor(state["max_abs_return"]).double().cpu().numpy()
        if m.shape != self.max_abs_return.shape:
            raise ValueError(f"reward scaling statistics for {m.shape[0]} tasks in the "
                             f"checkpoint, {self.num_tasks} here")
        self.max_abs_return = m.copy()
        self._m.copy_(torch.as_tensor(m, dtype=torch.float32))
        self._episodes = []
