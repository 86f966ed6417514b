"""Per-task rings of observations only, in the env's dtype: the data of policy distillation.

Distillation labels states with the teachers at update time, so it needs neither actions,
rewards nor next observations. Keeping observations in their own dtype makes Atari frame
stacks cost 28 KB (uint8) instead of 2 × 113 KB (two float32 copies in a replay row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mtrl.checkpoint import TENSORS_FORMAT, load_tensors, read_manifest, save_tensors
from mtrl.data.replay import checked_filled, checked_rings


class StateBatch(NamedTuple):
    """``num_tasks`` task-major blocks of ``per_task`` observations (see
    :class:`mtrl.data.replay.Batch`)."""

    obs: torch.Tensor  # [B, *obs_shape], the env's dtype
    task_id: torch.Tensor  # [B] int64
    num_tasks: int

    @property
    def per_task(self) -> int:
        return self.obs.shape[0] // self.num_tasks


class StateBuffer:
    """One preallocated ring of ``capacity // num_tasks`` observations per task on ``device``;
    ``sample(per_task)`` draws uniformly (with replacement) from each task's filled slots."""

    def __init__(
        self,
        num_tasks: int,
        capacity: int,
        obs_shape: tuple[int, ...],
        *,
        obs_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        if capacity < num_tasks:
            raise ValueError("capacity must hold at least one state per task")
        self.num_tasks = num_tasks
        self.capacity_per_task = capacity // num_tasks
        self.obs_shape = tuple(obs_shape)
        self.device = torch.device(device)
        self.obs = torch.zeros((num_tasks, self.capacity_per_task, *self.obs_shape),
                               dtype=obs_dtype, device=self.device)
        self.ptr = np.zeros(num_tasks, dtype=np.int64)
        self.size = np.zeros(num_tasks, dtype=np.int64)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return int(self.size.sum())

    @property
    def nbytes(self) -> int:
        return self.obs.numel() * self.obs.element_size()

    def add(self, obs: np.ndarray, task_id: np.ndarray) -> None:
        """Store one observation per env; ``task_id[i]`` is env i's task."""
        task_id = np.asarray(task_id, dtype=np.int64)
        # rank of each env among the envs of its task in this call
        order = np.argsort(task_id, kind="stable")
        first = np.searchsorted(task_id[order], task_id[order], side="left")
        rank = np.empty_like(task_id)
        rank[order] = np.arange(len(task_id)) - first
        counts = np.bincount(task_id, minlength=self.num_tasks)
        slot = (self.ptr[task_id] + rank) % self.capacity_per_task
        flat = torch.as_tensor(task_id * self.capacity_per_task + slot, device=self.device)
        view = self.obs.view(-1, *self.obs_shape)
        view.index_copy_(0, flat, torch.as_tensor(np.asarray(obs), device=self.device)
                         .to(self.obs.dtype))
        self.ptr = (self.ptr + counts) % self.capacity_per_task
        self.size = np.minimum(self.size + counts, self.capacity_per_task)

    def sample(self, per_task: int) -> StateBatch:
        if (self.size == 0).any():
            empty = np.flatnonzero(self.size == 0).tolist()
            raise RuntimeError(f"cannot sample: no states yet for task(s) {empty}")
        t = self.num_tasks
        size = torch.as_tensor(self.size, device=self.device)
        u = torch.rand(t, per_task, device=self.device, generator=self.generator)
        idx = torch.minimum((u * size.unsqueeze(1)).long(), (size - 1).unsqueeze(1))
        rows = idx + torch.arange(t, device=self.device).unsqueeze(1) * self.capacity_per_task
        obs = self.obs.view(-1, *self.obs_shape).index_select(0, rows.view(-1))
        tid = torch.arange(t, device=self.device).repeat_interleave(per_task)
        return StateBatch(obs, tid, t)

    # ------------------------------------------------------------------ persistence
    def _shape_meta(self) -> dict[str, Any]:
        return {"num_tasks": self.num_tasks, "capacity_per_task": self.capacity_per_task,
                "obs_shape": list(self.obs_shape), "dtype": str(self.obs.dtype)}

    def save(self, path: Path) -> dict[str, Any]:
        """The filled part of the rings, the pointers and the sampler's state, as raw tensors
        (no pickle), like the replay buffer."""
        filled = int(self.size.max())
        tensors = {
            "obs": self.obs[:, :filled],
            "ptr": torch.from_numpy(self.ptr.copy()),
            "size": torch.from_numpy(self.size.copy()),
            "generator": self.generator.get_state(),
        }
        return save_tensors(path, tensors, kind="states", filled=filled, **self._shape_meta())

    def load(self, path: Path) -> None:
        manifest = read_manifest(Path(path), fmt=TENSORS_FORMAT)
        for key, mine in self._shape_meta().items():
            if manifest.get(key) != mine:
                raise ValueError(f"state buffer {key}={manifest.get(key)} in {path}, {mine} here")
        filled = checked_filled(manifest, self.capacity_per_task, path)
        self.obs.zero_()
        _, rest = load_tensors(Path(path), into={"obs": self.obs[:, :filled]})
        self.ptr, self.size = checked_rings(rest, self.num_tasks, self.capacity_per_task, path)
        self.generator.set_state(rest["generator"])
