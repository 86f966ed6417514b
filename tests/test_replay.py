from __future__ import annotations

import numpy as np
import pytest
import torch

from mtrl.data.replay import MultiTaskReplayBuffer


def _fill(buf: MultiTaskReplayBuffer, steps: int, task_ids: np.ndarray, start: int = 0) -> None:
    """obs[..., 0] = task id, obs[..., 1] = step index: every row says where it came from."""
    n = len(task_ids)
    for t in range(start, start + steps):
        obs = np.stack([task_ids, np.full(n, t)], 1).astype(np.float32)
        buf.add(obs, np.full((n, 1), t, np.float32), np.full(n, float(t)), obs + 0.5,
                np.zeros(n), task_ids)


def test_stratified_sampling_equal_counts_and_right_task():
    buf = MultiTaskReplayBuffer(4, 400, (2,), 1, seed=0)
    _fill(buf, 30, np.arange(4))
    b = buf.sample(per_task=16)
    assert b.obs.shape == (64, 2) and b.num_tasks == 4 and b.per_task == 16
    counts = torch.bincount(b.task_id, minlength=4)
    assert counts.tolist() == [16, 16, 16, 16]
    # task-major blocks, and each row really comes from its task's ring
    assert torch.equal(b.task_id, torch.arange(4).repeat_interleave(16))
    assert torch.equal(b.obs[:, 0].long(), b.task_id)
    torch.testing.assert_close(b.next_obs, b.obs + 0.5)
    torch.testing.assert_close(b.reward, b.obs[:, 1])


def test_sampling_is_uniform_within_each_task():
    buf = MultiTaskReplayBuffer(2, 20, (2,), 1, seed=1)
    _fill(buf, 10, np.arange(2))
    b = buf.sample(per_task=20_000)
    steps = b.obs[:20_000, 1].long()
    freq = torch.bincount(steps, minlength=10).float() / 20_000
    assert freq.min() > 0.08 and freq.max() < 0.12  # each of the 10 slots ~ 1/10


def test_rings_overwrite_oldest_and_envs_of_one_task_share_a_ring():
    buf = MultiTaskReplayBuffer(2, 2 * 5, (2,), 1, seed=0)  # 5 per task
    # three envs: two of task 0, one of task 1
    _fill(buf, 4, np.array([0, 0, 1]))
    assert buf.size.tolist() == [5, 4]
    held = sorted(buf.obs[0, :, 1].tolist())
    assert held == [1.0, 2.0, 2.0, 3.0, 3.0]  # the first two task-0 transitions were overwritten
    assert sorted(buf.obs[1, :4, 1].tolist()) == [0.0, 1.0, 2.0, 3.0]


def test_terminated_flag_is_stored():
    buf = MultiTaskReplayBuffer(1, 10, (1,), 1, seed=0)
    buf.add(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), np.zeros((2, 1)),
            np.array([True, False]), np.array([0, 0]))
    assert buf.terminated[0, :2].tolist() == [1.0, 0.0]


def test_cannot_sample_empty_task():
    buf = MultiTaskReplayBuffer(3, 30, (2,), 1, seed=0)
    _fill(buf, 2, np.array([0, 2]))
    with pytest.raises(RuntimeError, match=r"task\(s\) \[1\]"):
        buf.sample(4)


def test_save_load_roundtrip_continues_identically(tmp_path):
    a = MultiTaskReplayBuffer(3, 90, (2,), 1, seed=7)
    _fill(a, 12, np.arange(3))
    a.sample(4)
    manifest = a.save(tmp_path / "r.bin")
    assert manifest["layout"]["data"]["shape"][:2] == [3, 12]  # only the filled part is stored
    b = MultiTaskReplayBuffer(3, 90, (2,), 1, seed=123)
    b.load(tmp_path / "r.bin")
    _fill(a, 5, np.arange(3), start=12)
    _fill(b, 5, np.arange(3), start=12)
    for _ in range(3):
        x, y = a.sample(8), b.sample(8)
        assert torch.equal(x.obs, y.obs) and torch.equal(x.action, y.action)
    with pytest.raises(ValueError, match="num_tasks"):
        MultiTaskReplayBuffer(4, 90, (2,), 1).load(tmp_path / "r.bin")
