from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

from mtrl.envs.toy import PointReachVectorEnv, make_toy_env
from mtrl.evaluation import evaluate


def _oracle(env, obs):
    """Move straight to each env's own goal."""
    goals = env.env.goals[env.task_ids]
    return np.clip((goals - obs) / env.env.step_size, -1, 1).astype(np.float32)


def test_contract_shapes_and_task_ids():
    env = make_toy_env(4, envs_per_task=2, seed=0)
    assert env.num_envs == 8 and env.num_tasks == 4
    assert env.task_names == ["goal-0", "goal-1", "goal-2", "goal-3"]
    np.testing.assert_array_equal(env.task_ids, [0, 0, 1, 1, 2, 2, 3, 3])
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8, 2) and obs.dtype == np.float32
    obs, rew, _term, _trunc, info = env.step(np.zeros((8, 2), np.float32))
    assert rew.shape == (8,) and info["success"].dtype == bool
    np.testing.assert_allclose(info["final_obs"], obs)
    # reward = 1 - distance to own goal
    d = np.linalg.norm(obs - env.env.goals[env.task_ids], axis=1)
    np.testing.assert_allclose(rew, 1 - d, rtol=1e-5)


def test_time_limit_is_truncation_and_final_obs_is_last_obs():
    env = make_toy_env(2, max_episode_steps=5, seed=1)
    obs, _ = env.reset(seed=1)
    for _t in range(5):
        prev = obs
        obs, _, term, trunc, info = env.step(np.zeros((2, 2), np.float32))
    assert trunc.all() and not term.any()
    # zero action: the last observation equals the previous one; obs is already a new episode
    np.testing.assert_allclose(info["final_obs"], prev)
    assert info["_episode"].all()
    np.testing.assert_array_equal(info["episode"]["length"], [5, 5])


def test_wrong_goal_is_a_terminal_trap_and_success_is_ever():
    env = make_toy_env(2, max_episode_steps=40, seed=0)  # goals at (1, 0) and (-1, 0)
    env.reset(seed=0)
    env.env._pos[:] = 0.0
    done_info = None
    for _ in range(40):
        _, _, term, trunc, info = env.step(np.array([[1.0, 0.0], [1.0, 0.0]], np.float32))
        if "episode" in info:
            done_info = (term.copy(), trunc.copy(), info)
            break
    term, trunc, info = done_info
    # task 1's goal is at (-1, 0): moving right enters goal-0's region, a trap for task 1
    assert term[1] and not trunc[1] and not info["episode"]["success"][1]
    # task 0 succeeded on that same step (and keeps going: no termination in training)
    assert info["success"][0] and not term[0]
    # leave the goal: the episode of task 0 still counts as a success at its end
    for _ in range(60):
        _, _, term, trunc, info = env.step(np.array([[-1.0, 1.0], [0.0, 0.0]], np.float32))
        if "episode" in info and info["_episode"][0]:
            break
    assert info["episode"]["success"][0]


def test_task_blind_policies_solve_at_most_one_task():
    """The observation has no goal: any policy that ignores the task id does the same thing
    in every task, and reaching any goal region first ends all other tasks (trap)."""
    num_tasks = 6
    rng = np.random.default_rng(0)
    blind_policies = [np.tile(d, (50, 1)) for d in np.eye(2)]
    angles = 2 * np.pi * np.arange(num_tasks) / num_tasks
    blind_policies += [np.tile([np.cos(a), np.sin(a)], (50, 1)) for a in angles + 0.2]
    blind_policies += [rng.uniform(-1, 1, (50, 2)) for _ in range(20)]
    # a policy that tours the goals one after another
    tour = []
    pos = np.zeros(2)
    for a in angles:
        g = np.array([np.cos(a), np.sin(a)])
        while np.linalg.norm(g - pos) > 0.05:
            step = np.clip((g - pos) / 0.1, -1, 1)
            tour.append(step)
            pos = pos + 0.1 * step
    blind_policies.append(np.array(tour[:50]))
    for seq in blind_policies:
        env = make_toy_env(num_tasks, seed=3, max_episode_steps=len(seq))
        env.reset(seed=3)
        env.env._pos[:] = 0.0
        ever = np.zeros(num_tasks, bool)
        alive = np.ones(num_tasks, bool)
        for a in seq:
            _, _, term, trunc, info = env.step(np.tile(a, (num_tasks, 1)).astype(np.float32))
            ever |= info["success"] & alive
            alive &= ~(term | trunc)
            if not alive.any():
                break
        assert ever.sum() <= 1


def test_oracle_solves_every_task_under_the_evaluation_protocol():
    env = make_toy_env(5, seed=0, evaluation=True)
    env.set_terminate_on_success(True)

    class Oracle:
        def act(self, obs, task_id, deterministic=False):
            return _oracle(env, obs)

    result = evaluate(Oracle(), env, episodes_per_task=3, seed=0)
    assert result.success_mean == 1.0
    assert result.episodes == {f"goal-{k}": 3 for k in range(5)}
    # episodes end at the first success: ~10 steps of reward rising from 0 to ~1
    assert all(3.0 < r < 10.0 for r in result.returns.values())


def test_seeded_and_state_restores_exactly():
    def rollout(env, obs, n=120):
        out = []
        rng = np.random.default_rng(7)
        for _ in range(n):
            obs, r, *_ = env.step(rng.uniform(-1, 1, (env.num_envs, 2)).astype(np.float32))
            out.append(np.concatenate([obs.ravel(), r]))
        return np.array(out)

    a = make_toy_env(3, envs_per_task=2, seed=11, max_episode_steps=20)
    b = make_toy_env(3, envs_per_task=2, seed=11, max_episode_steps=20)
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    np.testing.assert_array_equal(rollout(a, oa), rollout(b, ob))

    c = make_toy_env(3, envs_per_task=2, seed=5, max_episode_steps=20)
    obs, _ = c.reset(seed=5)
    rollout(c, obs, 33)
    state = c.state_dict()
    obs_now = c.env._pos.astype(np.float32)
    ref = rollout(c, obs_now)
    d = make_toy_env(3, envs_per_task=2, seed=99, max_episode_steps=20)
    d.reset(seed=99)
    d.load_state_dict(state)
    np.testing.assert_array_equal(rollout(d, obs_now), ref)


def test_discrete_variant():
    env = make_toy_env(4, discrete=True, seed=0)
    assert isinstance(env.single_action_space, gym.spaces.Discrete)
    env.reset(seed=0)
    env.env._pos[:] = 0.0
    obs, *_ = env.step(np.array([1, 2, 3, 4]))
    np.testing.assert_allclose(obs, [[0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]], atol=1e-7)


def test_disabled_autoreset_requires_reset():
    env = PointReachVectorEnv(
        2, max_episode_steps=1, autoreset_mode=gym.vector.AutoresetMode.DISABLED
    )
    env.reset(seed=0)
    env.step(np.zeros((2, 2)))
    with pytest.raises(RuntimeError, match="reset the finished envs"):
        env.step(np.zeros((2, 2)))


def test_steps_thousands_of_times_per_second():
    env = make_toy_env(10, seed=0)
    env.reset(seed=0)
    actions = np.zeros((10, 2), np.float32)
    t = time.perf_counter()
    n = 2000
    for _ in range(n):
        env.step(actions)
    rate = n * env.num_envs / (time.perf_counter() - t)
    assert rate > 5_000, rate
