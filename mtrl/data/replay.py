"""Device-resident, per-task replay buffer with stratified sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mtrl.checkpoint import TENSORS_FORMAT, load_tensors, read_manifest, save_tensors


class Batch(NamedTuple):
    """A task-stratified batch: ``num_tasks`` blocks of ``per_task`` rows, task-major, so that
    ``x.view(num_tasks, per_task, ...)`` splits it by task without a gather. All tensors live on
    the learner's device."""

    obs: torch.Tensor  # [B, *obs_shape] float32
    action: torch.Tensor  # [B, action_dim] float32
    reward: torch.Tensor  # [B] float32
    next_obs: torch.Tensor  # [B, *obs_shape] float32
    terminated: torch.Tensor  # [B] float32: 1 only for true terminals, never for time limits
    task_id: torch.Tensor  # [B] int64
    num_tasks: int

    @property
    def per_task(self) -> int:
        return self.reward.shape[0] // self.num_tasks


class MultiTaskReplayBuffer:
    """One preallocated ring per task, all stored as ``[num_tasks, capacity_per_task, ...]``
    tensors on ``device``.

    ``add`` takes one vector-env step (host arrays) and copies it to the device in a single
    transfer; ``sample(per_task)`` draws ``per_task`` indices uniformly from each task's ring
    (with replacement) and returns a :class:`Batch`.
    """

    def __init__(
        self,
        num_tasks: int,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_dim: int,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        if capacity < num_tasks:
            raise ValueError("capacity must hold at least one transition per task")
        if capacity > 2**24:
            raise ValueError("capacity above 2**24 transitions is not supported")
        self.num_tasks = num_tasks
        self.capacity_per_task = capacity // num_tasks
        self.obs_shape = tuple(obs_shape)
        self.obs_dim = int(np.prod(obs_shape))
        self.action_dim = action_dim
        self.device = torch.device(device)
        T, C = num_tasks, self.capacity_per_task
        f32 = {"dtype": torch.float32, "device": self.device}
        self.obs = torch.zeros(T, C, self.obs_dim, **f32)
        self.next_obs = torch.zeros(T, C, self.obs_dim, **f32)
        self.action = torch.zeros(T, C, action_dim, **f32)
        self.reward = torch.zeros(T, C, **f32)
        self.terminated = torch.zeros(T, C, **f32)
        self.ptr = np.zeros(T, dtype=np.int64)
        self.size = np.zeros(T, dtype=np.int64)
        self._size_t = torch.zeros(T, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._row = torch.arange(T, device=self.device).unsqueeze(1) * C

    def __len__(self) -> int:
        return int(self.size.sum())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            "obs": self.obs,
            "next_obs": self.next_obs,
            "action": self.action,
            "reward": self.reward,
            "terminated": self.terminated,
        }

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        task_id: np.ndarray,
    ) -> None:
        """Store one transition per env. ``task_id[i]`` is env i's task."""
        n = obs.shape[0]
        task_id = np.asarray(task_id, dtype=np.int64)
        # Slot of each env inside its task's ring; several envs of one task take consecutive slots.
        order = np.argsort(task_id, kind="stable")
        sorted_tasks = task_id[order]
        first = np.searchsorted(sorted_tasks, sorted_tasks, side="left")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - first
        slot = (self.ptr[task_id] + rank) % self.capacity_per_task
        counts = np.bincount(task_id, minlength=self.num_tasks)

        # Pack everything into one host array: one host-to-device copy per step.
        packed = np.empty((n, 2 * self.obs_dim + self.action_dim + 2), dtype=np.float32)
        d, a = self.obs_dim, self.action_dim
        packed[:, :d] = obs.reshape(n, -1)
        packed[:, d : 2 * d] = next_obs.reshape(n, -1)
        packed[:, 2 * d : 2 * d + a] = np.asarray(action, dtype=np.float32).reshape(n, a)
        packed[:, 2 * d + a] = reward
        packed[:, 2 * d + a + 1] = terminated
        flat_idx = task_id * self.capacity_per_task + slot
        both = torch.from_numpy(np.concatenate([packed, flat_idx[:, None].astype(np.float32)], 1))
        if self.device.type != "cpu":
            both = both.pin_memory().to(self.device, non_blocking=True)
        dev = both[:, :-1]
        # float32 holds integers exactly up to 2**24, far above any per-buffer index here.
        idx = both[:, -1].long()
        C = self.capacity_per_task
        T = self.num_tasks
        self.obs.view(T * C, d).index_copy_(0, idx, dev[:, :d])
        self.next_obs.view(T * C, d).index_copy_(0, idx, dev[:, d : 2 * d])
        self.action.view(T * C, a).index_copy_(0, idx, dev[:, 2 * d : 2 * d + a])
        self.reward.view(T * C).index_copy_(0, idx, dev[:, 2 * d + a])
        self.terminated.view(T * C).index_copy_(0, idx, dev[:, 2 * d + a + 1])

        self.ptr = (self.ptr + counts) % self.capacity_per_task
        self.size = np.minimum(self.size + counts, self.capacity_per_task)
        self._size_t.copy_(torch.from_numpy(self.size.astype(np.float32)))

    def sample(self, per_task: int) -> Batch:
        """``per_task`` transitions from every task (uniform within each task's ring)."""
        if (self.size == 0).any():
            empty = np.flatnonzero(self.size == 0).tolist()
            raise RuntimeError(f"cannot sample: no transitions yet for task(s) {empty}")
        T = self.num_tasks
        u = torch.rand(T, per_task, device=self.device, generator=self.generator)
        idx = (u * self._size_t.unsqueeze(1)).long()
        idx = torch.minimum(idx, (self._size_t - 1).long().unsqueeze(1))
        flat = (idx + self._row).view(-1)
        d, a = self.obs_dim, self.action_dim
        C = self.capacity_per_task
        task_id = torch.arange(T, device=self.device).repeat_interleave(per_task)
        return Batch(
            obs=self.obs.view(T * C, d).index_select(0, flat).view(-1, *self.obs_shape),
            action=self.action.view(T * C, a).index_select(0, flat),
            reward=self.reward.view(T * C).index_select(0, flat),
            next_obs=self.next_obs.view(T * C, d).index_select(0, flat).view(-1, *self.obs_shape),
            terminated=self.terminated.view(T * C).index_select(0, flat),
            task_id=task_id,
            num_tasks=T,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> dict[str, Any]:
        """Write the filled part of the rings, the pointers and the sampling generator's state
        as raw tensors (see :func:`mtrl.checkpoint.save_tensors`); no pickle, no full copy."""
        filled = int(self.size.max())
        tensors = {k: v[:, :filled] for k, v in self._tensors().items()}
        tensors["ptr"] = torch.from_numpy(self.ptr.copy())
        tensors["size"] = torch.from_numpy(self.size.copy())
        tensors["generator"] = self.generator.get_state()
        return save_tensors(path, tensors, kind="replay", **self._shape_meta(), filled=filled)

    def _shape_meta(self) -> dict[str, int]:
        return {
            "num_tasks": self.num_tasks,
            "capacity_per_task": self.capacity_per_task,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
        }

    def load(self, path: Path) -> None:
        """Restore a buffer written by :meth:`save` (same tasks, capacity and shapes)."""
        manifest = read_manifest(Path(path), fmt=TENSORS_FORMAT)
        for key, mine in self._shape_meta().items():
            if int(manifest.get(key, -1)) != mine:
                raise ValueError(
                    f"replay buffer {key}={manifest.get(key)} in {path}, {mine} here"
                )
        filled = int(manifest["filled"])
        for tensor in self._tensors().values():
            tensor.zero_()
        views = {k: v[:, :filled] for k, v in self._tensors().items()}
        _, rest = load_tensors(Path(path), into=views)
        self.ptr = rest["ptr"].numpy().astype(np.int64).copy()
        self.size = rest["size"].numpy().astype(np.int64).copy()
        self._size_t.copy_(torch.from_numpy(self.size.astype(np.float32)))
        self.generator.set_state(rest["generator"])
