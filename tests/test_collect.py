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
