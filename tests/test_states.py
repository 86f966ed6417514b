"""StateBuffer (distillation's per-task observation rings): stratified sampling, ring order,
dtype, save → load, and a distillation run that resumes exactly."""

from __future__ import annotations

import numpy as np
import torch

from mtrl.data.states import StateBuffer
from mtrl.presets import get_preset


def test_rings_keep_the_newest_states_per_task_in_their_dtype():
    buf = StateBuffer(2, 6, (1, 2), obs_dtype=torch.uint8)  # 3 slots per task
    for step in range(4):  # envs: task 1, task 0, task 1
        obs = np.full((3, 1, 2), 0, np.uint8)
        obs[:, 0, 0] = [10 + step, 20 + step, 30 + step]
        buf.add(obs, np.array([1, 0, 1]))
    assert buf.obs.dtype == torch.uint8
    assert buf.size.tolist() == [3, 3]
    # task 0 got 20..23 into 3 slots: 23 overwrote 20; task 1 got 6 states into 3 slots
    assert sorted(buf.obs[0, :, 0, 0].tolist()) == [21, 22, 23]
    assert sorted(buf.obs[1, :, 0, 0].tolist()) == [13, 32, 33]
    b = buf.sample(5)
    assert b.obs.shape == (10, 1, 2) and b.task_id.tolist() == [0] * 5 + [1] * 5
    assert set(b.obs[:5, 0, 0].tolist()) <= {21, 22, 23}
    assert set(b.obs[5:, 0, 0].tolist()) <= {13, 32, 33}


def test_save_load_roundtrip_continues_the_same_samples(tmp_path):
    a = StateBuffer(2, 8, (3,), seed=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        a.add(rng.normal(size=(4, 3)).astype(np.float32), np.array([0, 1, 0, 1]))
    a.save(tmp_path / "s")
    b = StateBuffer(2, 8, (3,), seed=99)
    b.load(tmp_path / "s")
    assert torch.equal(a.obs, b.obs) and a.ptr.tolist() == b.ptr.tolist()
    sa, sb = a.sample(4), b.sample(4)
    assert torch.equal(sa.obs, sb.obs)


def _tiny_distill(tmp_path, teacher, total):
    cfg = get_preset("toy-distill")
    cfg.env.num_tasks = 2
    cfg.agent.distill.teachers = [str(teacher)]
    cfg.agent.actor_hidden = [16]
    cfg.agent.batch_size = 16
    cfg.total_steps, cfg.warmup_steps = total, 32
    cfg.replay.capacity = 1_000
    cfg.eval.every, cfg.eval.final = 0, False
    cfg.log.every = 32
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 64
    cfg.device = "cpu"
    return cfg


def test_distillation_resume_equals_uninterrupted(tmp_path):
    from mtrl.checkpoint import CheckpointManager, load_file
    from mtrl.runner import train

    t = get_preset("toy-a2c")  # an mtrl teacher run for both goals
    t.env.num_tasks = 2
    t.total_steps = 320
    t.agent.actor_hidden = t.agent.critic_hidden = [8]
    t.eval.final, t.eval.every, t.log.progress_bar = False, 0, False
    train(t, tmp_path / "teacher")

    train(_tiny_distill(tmp_path, tmp_path / "teacher", 192), tmp_path / "full")
    train(_tiny_distill(tmp_path, tmp_path / "teacher", 96), tmp_path / "part")
    train(_tiny_distill(tmp_path, tmp_path / "teacher", 192), tmp_path / "part", resume=True)

    def final(d):
        return load_file(CheckpointManager(d / "checkpoints").latest().path)

    a, b = final(tmp_path / "full"), final(tmp_path / "part")
    for k, v in a["agent"]["student"].items():
        assert torch.equal(v, b["agent"]["student"][k]), k
    assert a["loop"] == b["loop"]
