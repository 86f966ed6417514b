from __future__ import annotations

import gymnasium as gym
import numpy as np

from mtrl.collect import VectorCollector
from mtrl.envs.base import MultiTaskVectorEnv
from mtrl.envs.toy import make_toy_env


class _EchoEnv(gym.vector.VectorEnv):
    """Observation = the last action received; action bounds [0, 2] x [-4, 4]."""

    def __init__(self) -> None:
        self.num_envs = 2
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.single_action_space = gym.spaces.Box(np.array([0.0, -4.0]), np.array([2.0, 4.0]))
        self.single_observation_space = gym.spaces.Box(-10, 10, (2,))
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, 2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 2)

    def reset(self, *, seed=None, options=None):
        return np.zeros((2, 2)), {}

    def step(self, actions):
        return np.asarray(actions), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), {}


def test_actions_are_mapped_from_policy_space_to_env_bounds():
    env = MultiTaskVectorEnv(_EchoEnv(), ["a", "b"], np.arange(2), max_episode_steps=10,
                             goals_per_task=1, benchmark={})
    col = VectorCollector(env)
    col.reset()
    tr = col.step(np.array([[-1.0, -1.0], [1.0, 0.5]], np.float32))
    np.testing.assert_allclose(tr.next_obs, [[0.0, -4.0], [2.0, 2.0]])
    # the stored action stays in policy space
    np.testing.assert_allclose(tr.action, [[-1.0, -1.0], [1.0, 0.5]])
    np.testing.assert_allclose(col.obs, tr.next_obs)


def test_transitions_chain_and_carry_true_next_obs_across_resets():
    col = VectorCollector(make_toy_env(2, max_episode_steps=3, seed=0))
    first = col.reset(seed=0)
    rng = np.random.default_rng(0)
    prev_next = None
    for t in range(3):
        tr = col.step(rng.uniform(-1, 1, (2, 2)).astype(np.float32))
        if t == 0:
            np.testing.assert_allclose(tr.obs, first)
        else:
            np.testing.assert_allclose(tr.obs, prev_next)
        prev_next = tr.next_obs
    assert tr.truncated.all() and tr.episode is not None and tr.episode_mask.all()
    # after the time limit: next_obs is the last obs of the old episode, col.obs a new start
    assert not np.allclose(tr.next_obs, col.obs)
    assert np.abs(col.obs).max() <= 0.1


class _RecordedCollector:
    """A second collector implementation: replays transitions recorded from a real env, in a
    loop, whatever the policy does (the policy is still asked, as a real collector would)."""

    def __init__(self, env: MultiTaskVectorEnv, steps: int) -> None:
        from mtrl.collect import EnvSpec

        self._spec = EnvSpec.of(env)
        rec = VectorCollector(env)
        rec.reset(seed=0)
        rng = np.random.default_rng(1)
        n = env.num_envs
        self.steps = [rec.step(rng.uniform(-1, 1, (n, 2)).astype(np.float32))
                      for _ in range(steps)]
        env.close()
        self.cursor = 0
        self.asked = 0
        self._started = False
        self.closed = False

    spec = property(lambda self: self._spec)
    task_ids = property(lambda self: self._spec.task_ids)
    num_envs = property(lambda self: self._spec.num_envs)
    started = property(lambda self: self._started)

    def reset(self, seed=None):
        self._started = True

    def collect(self, policy, n):
        from mtrl.collect import Transitions

        chunk = []
        for _ in range(n):
            s = self.steps[self.cursor % len(self.steps)]
            policy.act(s.obs, s.task_id)
            self.asked += 1
            chunk.append(s)
            self.cursor += 1
        return Transitions.from_steps(chunk)

    def state_dict(self):
        return {"cursor": self.cursor}

    def load_state_dict(self, state):
        self.cursor = int(state["cursor"])

    def close(self):
        self.closed = True


def test_the_loop_runs_unchanged_with_another_collector(tmp_path):
    import torch
    from conftest import tiny_toy_config

    from mtrl.runner import Trainer

    cfg = tiny_toy_config(total_steps=400, warmup_steps=80, checkpoint__every=0)
    env = make_toy_env(cfg.env.num_tasks, envs_per_task=cfg.env.envs_per_task,
                       max_episode_steps=cfg.env.max_episode_steps, seed=cfg.seed)
    collector = _RecordedCollector(env, steps=30)
    trainer = Trainer(cfg, tmp_path / "run", collector=collector)
    before = [p.detach().clone() for p in trainer.agent.actor.parameters()]
    result = trainer.run()
    n = collector.num_envs
    assert result.env_steps == 400 and collector.asked == 400 // n
    # one update per vector step from the last warm-up step on, on the recorded data
    assert result.updates == 400 // n - 80 // n + 1
    assert collector.closed
    buf = trainer.buffer
    first = collector.steps[0]
    k = int(first.task_id[0])
    torch.testing.assert_close(buf.obs[k, 0], torch.as_tensor(first.obs[0]))
    torch.testing.assert_close(buf.next_obs[k, 0], torch.as_tensor(first.next_obs[0]))
    after = list(trainer.agent.actor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert any((tmp_path / "run" / "checkpoints").glob("ckpt_*.pt"))
