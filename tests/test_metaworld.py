from __future__ import annotations

import numpy as np
import pytest

from mtrl.config import EnvConfig, task_names
from mtrl.envs import make_env
from mtrl.envs.metaworld import make_metaworld_env

MT10 = [
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
    "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3",
    "window-close-v3",
]


@pytest.fixture(scope="module")
def mt10():
    env = make_env(EnvConfig(name="mt10"), seed=0)
    yield env
    env.close()


def test_mt10_task_names_spaces_and_time_limit(mt10):
    assert mt10.task_names == MT10 == task_names(EnvConfig(name="mt10"))
    np.testing.assert_array_equal(mt10.task_ids, np.arange(10))
    assert mt10.single_observation_space.shape == (39,)  # no one-hot appended
    assert mt10.single_action_space.shape == (4,)
    assert mt10.benchmark["reward_function_version"] == "v2"
    assert mt10.benchmark["episode_length"] == 500
    obs, _ = mt10.reset(seed=0)
    assert obs.shape == (10, 39) and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    for t in range(500):
        obs, _rew, term, trunc, info = mt10.step(rng.uniform(-1, 1, (10, 4)).astype(np.float32))
        assert info["success"].shape == (10,)
        if t < 499:
            assert not (term | trunc).any()
    # 500-step episodes end in truncation, never termination (agents bootstrap through it)
    assert trunc.all() and not term.any()
    assert info["_episode"].all() and (info["episode"]["length"] == 500).all()
    # final_obs is the last observation of the old episode, obs the first of the new one
    assert not np.allclose(info["final_obs"], obs)


def test_custom_task_list_is_seeded_even_with_seed_zero():
    # metaworld's own custom-mt-envs entry point treats seed=0 as "no seed"; ours does not
    a = make_metaworld_env("metaworld", ["reach-v3", "push-v3"], seed=0)
    b = make_metaworld_env("metaworld", ["reach-v3", "push-v3"], seed=0)
    c = make_metaworld_env("metaworld", ["reach-v3", "push-v3"], seed=1)
    try:
        assert a.task_names == ["reach-v3", "push-v3"]
        trajectories = []
        for env in (a, b, c):
            obs, _ = env.reset(seed=0)
            rows = [obs]
            rng = np.random.default_rng(0)
            for _ in range(600):  # crosses an episode boundary: a new goal is sampled
                obs, *_ = env.step(rng.uniform(-1, 1, (2, 4)).astype(np.float32))
                rows.append(obs)
            trajectories.append(np.stack(rows))
        np.testing.assert_array_equal(trajectories[0], trajectories[1])
        assert not np.allclose(trajectories[0], trajectories[2])
    finally:
        for env in (a, b, c):
            env.close()


def test_eval_env_runs_one_episode_per_goal():
    env = make_env(EnvConfig(name="metaworld", tasks=["reach-v3", "door-open-v3"]), seed=3,
                   evaluation=True)
    try:
        assert env.goals_per_task == 50
        firsts = []
        for goal in (0, 1, 0):
            env.set_goals(np.full(2, goal), np.ones(2, bool))
            obs, _ = env.reset()
            firsts.append(obs)
        np.testing.assert_array_equal(firsts[0], firsts[2])  # same goal, same start
        assert not np.allclose(firsts[0], firsts[1])  # another goal
    finally:
        env.close()


def test_env_rng_state_roundtrip():
    a = make_metaworld_env("metaworld", ["reach-v3"], seed=5)
    b = make_metaworld_env("metaworld", ["reach-v3"], seed=5)
    try:
        a.reset()
        for _ in range(3):  # sample a few goals to move the generators
            a.env.call("sample_tasks")
        state = a.state_dict()
        b.load_state_dict(state)
        a.env.call("sample_tasks")
        b.env.call("sample_tasks")
        oa, _ = a.reset()
        ob, _ = b.reset()
        np.testing.assert_array_equal(oa, ob)
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_mt50_builds_with_50_tasks():
    env = make_env(EnvConfig(name="mt50"), seed=0)
    try:
        assert env.num_envs == 50 and len(set(env.task_names)) == 50
        assert env.task_names == task_names(EnvConfig(name="mt50"))
    finally:
        env.close()


def test_eval_protocol_agrees_with_metaworld_evaluation():
    """mtrl's evaluation and ``metaworld.evaluation.evaluation`` give the same per-episode
    success and return for the same policy, seed and goals. metaworld's function samples a
    random goal per episode; to compare episode by episode it runs once per goal with goal
    sampling off and goal g fixed, which is what mtrl's protocol does for episode g."""
    import gymnasium as gym
    import torch
    from metaworld.evaluation import evaluation as mw_evaluation

    from mtrl.agents import build_agent
    from mtrl.config import AgentConfig
    from mtrl.evaluation import evaluate

    seed, goals = 3, 2
    torch.manual_seed(0)
    agent = build_agent(AgentConfig(actor_hidden=[32], critic_hidden=[32], batch_size=10),
                        obs_dim=39, action_dim=4, num_tasks=10, device=torch.device("cpu"))
    agent.eval()
    ours_env = make_env(EnvConfig(name="mt10"), seed=seed, evaluation=True)
    try:
        ours = evaluate(agent, ours_env, goals, seed=0)
    finally:
        ours_env.close()

    class Policy:
        def eval_action(self, obs):
            return agent.act(np.asarray(obs, dtype=np.float32), np.arange(10), True)

        def reset(self, mask):
            pass

    mw_env = gym.make_vec("Meta-World/MT10", vector_strategy="sync", seed=seed,
                          use_one_hot=False, reward_function_version="v2",
                          max_episode_steps=500)
    try:
        mw_env.call("toggle_sample_tasks_on_reset", False)
        for g in range(goals):
            for sub in mw_env.envs:
                sub.unwrapped.set_task(sub.get_wrapper_attr("tasks")[g])
            _, _, success, returns = mw_evaluation(Policy(), mw_env, num_episodes=1)
            for task in ours.task_names:
                assert ours.episode_success[task][g] == bool(success[task]), (task, g)
                assert ours.episode_return[task][g] == pytest.approx(returns[task][0],
                                                                     rel=1e-4), (task, g)
    finally:
        mw_env.close()


def test_render_frames_refuses_several_tasks_in_one_process():
    """Several MuJoCo renderers in one process draw tasks with each other's meshes (docs/NOTES.md,
    "Meta-World videos"): an env of two tasks refuses to render, before any GL context exists."""
    env = make_env(EnvConfig(name="metaworld", tasks=["reach-v3", "drawer-close-v3"]), seed=0,
                   evaluation=True, render=True)
    try:
        with pytest.raises(RuntimeError, match="one task per process"):
            env.render_frames()
    finally:
        env.close()
