"""Device-resident, per-task replay buffer with stratified sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mtrl.checkpoint import TENSORS_FORMAT, load_tensors, read_manifest, save_tensors


def checked_filled(manifest: dict[str, Any], capacity: int, path: Path) -> int:
    """The manifest's ``filled`` row count, which must be an int in ``[0, capacity]``."""
    filled = manifest.get("filled")
    if not isinstance(filled, int) or isinstance(filled, bool) or not 0 <= filled <= capacity:
        raise ValueError(f"{path}: its manifest's 'filled' is {filled!r}, not a row count "
                         f"between 0 and {capacity}")
    return filled


def checked_rings(rest: dict[str, torch.Tensor], num_tasks: int, capacity: int, path: Path
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The ``ptr`` and ``size`` ring pointers of a saved buffer, checked: one int64 per task,
    within the capacity, and a ``generator`` state present."""
    out = []
    for key in ("ptr", "size"):
        t = rest.get(key)
        if t is None or t.dtype != torch.int64 or tuple(t.shape) != (num_tasks,):
            raise ValueError(f"{path}: '{key}' is missing or is not {num_tasks} int64 values")
        a = t.numpy().astype(np.int64).copy()
        if (a < 0).any() or (a > capacity).any():
            raise ValueError(f"{path}: '{key}' has values outside [0, {capacity}]")
        out.append(a)
    if rest.get("generator") is None or rest["generator"].dtype != torch.uint8:
        raise ValueError(f"{path}: the sampler's generator state is missing")
    return out[0], out[1]


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
    """One preallocated ring per task on ``device``.

    All fields of a transition live in one float32 row ``[obs, next_obs, action, reward,
    terminated]`` of a ``[num_tasks * capacity_per_task, width]`` tensor, so that ``add`` is one
    host-to-device copy and one ``index_copy_``, and ``sample(per_task)`` is one ``index_select``
    returning a :class:`Batch` whose fields are column views. ``obs``, ``next_obs``, ``action``,
    ``reward`` and ``terminated`` are ``[num_tasks, capacity_per_task, ...]`` views for
    inspection. Indices are drawn uniformly (with replacement) from each task's filled slots.
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
        T, C, d, a = num_tasks, self.capacity_per_task, self.obs_dim, action_dim
        # column layout of a row
        self._cols = {
            "obs": (0, d),
            "next_obs": (d, 2 * d),
            "action": (2 * d, 2 * d + a),
            "reward": (2 * d + a, 2 * d + a + 1),
            "terminated": (2 * d + a + 1, 2 * d + a + 2),
        }
        self.width = 2 * d + a + 2
        self.data = torch.zeros(T * C, self.width, dtype=torch.float32, device=self.device)
        self.ptr = np.zeros(T, dtype=np.int64)
        self.size = np.zeros(T, dtype=np.int64)
        self._size_t = torch.zeros(T, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._row = torch.arange(T, device=self.device).unsqueeze(1) * C
        if self.device.type == "cpu":
            self._data_np = self.data.numpy()
            self._size_np = self._size_t.numpy()
        self._slots_cache: tuple[bytes, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.size.sum())

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def _field(self, name: str) -> torch.Tensor:
        lo, hi = self._cols[name]
        view = self.data.view(self.num_tasks, self.capacity_per_task, self.width)[..., lo:hi]
        return view.squeeze(-1) if name in ("reward", "terminated") else view

    obs = property(lambda self: self._field("obs"))
    next_obs = property(lambda self: self._field("next_obs"))
    action = property(lambda self: self._field("action"))
    reward = property(lambda self: self._field("reward"))
    terminated = property(lambda self: self._field("terminated"))

    def _slots(self, task_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per env: its rank among the envs of its task in this step; per task: env count.
        Cached, since the task of each env never changes."""
        key = task_id.tobytes()
        if self._slots_cache is None or self._slots_cache[0] != key:
            n = task_id.shape[0]
            order = np.argsort(task_id, kind="stable")
            sorted_tasks = task_id[order]
            first = np.searchsorted(sorted_tasks, sorted_tasks, side="left")
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n) - first
            counts = np.bincount(task_id, minlength=self.num_tasks)
            self._slots_cache = (key, rank, counts)
        return self._slots_cache[1], self._slots_cache[2]

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
        rank, counts = self._slots(task_id)
        slot = (self.ptr[task_id] + rank) % self.capacity_per_task
        # One host array (rows + their flat index in the last column): one copy to the device.
        packed = np.empty((n, self.width + 1), dtype=np.float32)
        d, a = self.obs_dim, self.action_dim
        packed[:, :d] = obs.reshape(n, -1)
        packed[:, d : 2 * d] = next_obs.reshape(n, -1)
        packed[:, 2 * d : 2 * d + a] = np.asarray(action).reshape(n, a)
        packed[:, 2 * d + a] = reward
        packed[:, 2 * d + a + 1] = terminated
        # float32 holds integers exactly up to 2**24, the capacity limit.
        packed[:, -1] = task_id * self.capacity_per_task + slot
        self.ptr = (self.ptr + counts) % self.capacity_per_task
        self.size = np.minimum(self.size + counts, self.capacity_per_task)
        if self.device.type == "cpu":
            # Through NumPy views of the same memory: right after a simulator step the first
            # torch calls cost ~100 µs each (cold caches); NumPy indexing does not.
            self._data_np[task_id * self.capacity_per_task + slot] = packed[:, :-1]
            self._size_np[:] = self.size
            return
        both = torch.from_numpy(packed).pin_memory().to(self.device, non_blocking=True)
        self.data.index_copy_(0, both[:, -1].long(), both[:, :-1])
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
        rows = self.data.index_select(0, (idx + self._row).view(-1))
        c = self._cols
        return Batch(
            obs=rows[:, c["obs"][0] : c["obs"][1]].view(-1, *self.obs_shape),
            action=rows[:, c["action"][0] : c["action"][1]],
            reward=rows[:, c["reward"][0]],
            next_obs=rows[:, c["next_obs"][0] : c["next_obs"][1]].view(-1, *self.obs_shape),
            terminated=rows[:, c["terminated"][0]],
            task_id=torch.arange(T, device=self.device).repeat_interleave(per_task),
            num_tasks=T,
        )

    # ------------------------------------------------------------------ persistence
    def _shape_meta(self) -> dict[str, Any]:
        return {
            "num_tasks": self.num_tasks,
            "capacity_per_task": self.capacity_per_task,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "columns": {k: list(v) for k, v in self._cols.items()},
        }

    def save(self, path: Path) -> dict[str, Any]:
        """Write the filled part of the rings, the pointers and the sampling generator's state
        as raw tensors (see :func:`mtrl.checkpoint.save_tensors`): no pickle, no full copy."""
        filled = int(self.size.max())
        data3 = self.data.view(self.num_tasks, self.capacity_per_task, self.width)
        tensors = {
            "data": data3[:, :filled],
            "ptr": torch.from_numpy(self.ptr.copy()),
            "size": torch.from_numpy(self.size.copy()),
            "generator": self.generator.get_state(),
        }
        return save_tensors(path, tensors, kind="replay", filled=filled, **self._shape_meta())

    def load(self, path: Path) -> None:
        """Restore a buffer written by :meth:`save` (same tasks, capacity and shapes)."""
        manifest = read_manifest(Path(path), fmt=TENSORS_FORMAT)
        for key, mine in self._shape_meta().items():
            if manifest.get(key) != mine:
                raise ValueError(f"replay buffer {key}={manifest.get(key)} in {path}, {mine} here")
        filled = checked_filled(manifest, self.capacity_per_task, path)
        self.data.zero_()
        data3 = self.data.view(self.num_tasks, self.capacity_per_task, self.width)
        _, rest = load_tensors(Path(path), into={"data": data3[:, :filled]})
        self.ptr, self.size = checked_rings(rest, self.num_tasks, self.capacity_per_task, path)
        self._size_t.copy_(torch.from_numpy(self.size.astype(np.float32)))
        self.generator.set_state(rest["generator"])
