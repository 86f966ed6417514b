"""The multi-game Atari env (ale_py's native vector env) and human-normalized scores."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from ale_py.vector_env import AtariVectorEnv

from mtrl import config as C
from mtrl.envs import make_env
from mtrl.envs.atari import (
    ATARI6,
    ATARI57,
    available_games,
    game_name,
    make_atari_env,
    rom_id,
    threads_per_game,
)
from mtrl.envs.atari_scores import REFERENCE_SCORES, human_normalized_score, summarize
from mtrl.evaluation import evaluate


def _rand(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 18, size=n, dtype=np.int64)


# ---------------------------------------------------------------------------- names and lists


def test_game_lists_map_to_roms_that_ale_py_ships():
    assert len(ATARI57) == 57 and len(set(ATARI57)) == 57
    assert set(ATARI6) <= set(ATARI57)
    assert set(ATARI57) <= set(available_games())
    for game, rom in [("SpaceInvaders", "space_invaders"), ("UpNDown", "up_n_down"),
                      ("MontezumaRevenge", "montezuma_revenge"), ("Pong", "pong"),
                      ("KungFuMaster", "kung_fu_master")]:
        assert rom_id(game) == rom and game_name(rom) == game
    assert all(game_name(rom_id(g)) == g for g in ATARI57)
    with pytest.raises(ValueError, match="unknown Atari game 'Pongg'"):
        rom_id("Pongg")


def test_threads_are_shared_by_games():
    assert threads_per_game(2, 6, 4) == 1  # more games than threads: one each
    assert threads_per_game(8, 2, 4) == 4
    assert threads_per_game(8, 2, 2) == 2  # never more threads than envs
    assert threads_per_game(16, 1, 8) == 8


# ---------------------------------------------------------------------------- the contract


def test_shapes_dtypes_spaces_task_ids_and_metadata():
    env = make_atari_env(["Pong", "Breakout", "SpaceInvaders"], 2, seed=0)
    assert env.num_envs == 6 and env.num_tasks == 3
    assert env.task_names == ["Pong", "Breakout", "SpaceInvaders"]
    np.testing.assert_array_equal(env.task_ids, [0, 0, 1, 1, 2, 2])
    assert env.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert env.single_action_space == gym.spaces.Discrete(18)
    assert all(sub.single_action_space.n == 18 for sub in env.env.envs)
    assert env.goals_per_task == 1 and env.max_episode_steps == 27_000
    b = env.benchmark
    assert (b["name"], b["games"], b["frame_skip"], b["sticky_actions"], b["noop_max"],
            b["full_action_space"], b["max_episode_frames"], b["reward_clipping"],
            b["has_success"]) == ("atari", ["Pong", "Breakout", "SpaceInvaders"], 4, 0.25, 30,
                                  True, 108_000, False, False)
    assert isinstance(b["ale_py"], str)

    obs, _ = env.reset(seed=0)
    assert obs.shape == (6, 4, 84, 84) and obs.dtype == np.uint8
    prev = obs
    obs, rew, term, trunc, info = env.step(_rand(np.random.default_rng(0), 6))
    assert obs.dtype == np.uint8 and info["final_obs"].dtype == np.uint8
    assert rew.dtype == np.float32 and rew.shape == (6,)
    assert info["raw_reward"].dtype == np.float32 and info["raw_reward"].shape == (6,)
    assert not info["success"].any() and info["success"].shape == (6,)
    assert not (term | trunc).any()
    np.testing.assert_array_equal(info["final_obs"], obs)
    # frame stacking: the stack shifted by one frame
    np.testing.assert_array_equal(obs[:, :-1], prev[:, 1:])
    frames = env.render_frames()
    assert len(frames) == 6 and frames[0].shape == (336, 336, 3) and frames[0].dtype == np.uint8
    np.testing.assert_array_equal(frames[3][::4, ::4, 1], obs[3, -1])
    env.close()


def test_sub_envs_are_the_raw_per_game_envs_concatenated_in_task_order():
    """Same per-env seeds and actions → the same frames and rewards as raw ale_py envs."""
    games, n, seed = ["Breakout", "Pong"], 2, 7
    env = make_atari_env(games, n, seed=seed, noop_max=0)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(games) * n)
    raws = [AtariVectorEnv(rom_id(g), n, autoreset_mode="SameStep", full_action_space=True,
                           repeat_action_probability=0.25, reward_clipping=False,
                           use_fire_reset=False, noop_max=0, num_threads=1) for g in games]
    obs, _ = env.reset(seed=seed)
    raw_obs = [r.reset(seed=seeds[k * n:(k + 1) * n])[0] for k, r in enumerate(raws)]
    np.testing.assert_array_equal(obs, np.concatenate(raw_obs))
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = _rand(rng, 4)
        obs, rew, *_ = env.step(a)
        outs = [r.step(a[k * n:(k + 1) * n]) for k, r in enumerate(raws)]
        np.testing.assert_array_equal(obs, np.concatenate([o[0] for o in outs]))
        np.testing.assert_array_equal(rew, np.concatenate([o[1] for o in outs]))
    assert np.abs(obs[:2].astype(int) - obs[2:].astype(int)).sum() > 0  # different games


def test_a_subset_of_envs_steps_as_those_envs_of_the_whole_set():
    """One remote runner's share (``env_tasks``, global game indices; a game may be split):
    global task names and ids, and, reset with the same per-env seeds and given the same
    actions, the same frames and rewards as those envs of the whole set."""
    games, n, seed = ["Breakout", "Pong", "Freeway"], 2, 5
    whole = make_atari_env(games, n, seed=seed, noop_max=0)
    part = make_atari_env(games, n, seed=seed, noop_max=0, env_tasks=[1, 2, 2])
    assert part.task_names == games and part.task_ids.tolist() == [1, 2, 2]
    assert part.num_envs == 3 and part.env.env_counts == [1, 2]
    seeds = [seed + i for i in range(6)]
    obs, _ = whole.reset(seed=seeds)
    sub, _ = part.reset(seed=seeds[3:])
    np.testing.assert_array_equal(sub, obs[3:])
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = _rand(rng, 6)
        obs, rew, *_ = whole.step(a)
        sub, sub_rew, *_ = part.step(a[3:])
        np.testing.assert_array_equal(sub, obs[3:])
        np.testing.assert_array_equal(sub_rew, rew[3:])
    with pytest.raises(ValueError, match="non-decreasing"):
        make_atari_env(games, n, seed=seed, env_tasks=[2, 1])
    whole.close()
    part.close()


def test_seeded_envs_repeat_and_other_seeds_differ():
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = make_atari_env(["Breakout"], 2, seed=seed)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(1)
        total = np.zeros(2)
        for _ in range(150):
            obs, r, *_ = env.step(_rand(rng, 2))
            total += r
        env.close()
        return obs, total

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


# ---------------------------------------------------------------------------- episodes and rewards


def test_clipped_step_rewards_but_unclipped_episode_return():
    # SpaceInvaders pays 5-30 points per invader: clipped rewards differ from the score.
    env = make_atari_env(["SpaceInvaders"], 2, seed=0, clip_rewards=True,
                         max_episode_frames=1600)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    raw_sum, clip_sum = np.zeros(2), np.zeros(2)
    ep = None
    for _ in range(400):
        _, rew, term, trunc, info = env.step(_rand(rng, 2))
        np.testing.assert_array_equal(rew, np.sign(info["raw_reward"]))
        assert set(np.unique(rew)) <= {-1.0, 0.0, 1.0}
        raw_sum += info["raw_reward"]
        clip_sum += rew
        if (term | trunc).any():
            ep = info["episode"]
            break
    assert ep is not None and trunc.all() and not term.any()  # 1600 frames = 400 steps
    np.testing.assert_array_equal(ep["length"], [400, 400])
    np.testing.assert_allclose(ep["return"], raw_sum)
    assert (raw_sum > clip_sum).all() and (raw_sum >= 5 * clip_sum).all() and clip_sum.min() > 0
    assert raw_sum.max() > 1


def test_game_over_is_termination_with_the_unclipped_score():
    # Random play loses Pong 21 points to (almost) none within ~1000 agent steps.
    env = make_atari_env(["Pong"], 1, seed=0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    score, losses, steps = 0.0, 0, 0
    while True:
        _, _, term, trunc, info = env.step(_rand(rng, 1))
        score += float(info["raw_reward"][0])
        losses += int(info["raw_reward"][0] == -1)
        steps += 1
        if term[0] or trunc[0]:
            break
        assert steps < 5000
    assert term[0] and not trunc[0]
    assert losses == 21 and -21 <= score < 0
    assert info["episode"]["return"][0] == score and info["episode"]["length"][0] == steps


def test_time_limit_truncates_and_final_obs_continues_the_episode():
    env = make_atari_env(["Pong", "Breakout"], 1, seed=2, max_episode_frames=200)
    assert env.max_episode_steps == 50
    obs, _ = env.reset(seed=2)
    for t in range(50):
        prev = obs
        obs, _, term, trunc, info = env.step(np.zeros(2, dtype=np.int64))
        if t < 49:
            assert not (term | trunc).any()
    assert trunc.all() and not term.any()
    np.testing.assert_array_equal(info["episode"]["length"], [50, 50])
    final = info["final_obs"]
    # the last observation continues the old stack; the returned obs starts a new episode
    np.testing.assert_array_equal(final[:, :-1], prev[:, 1:])
    assert not np.array_equal(final, obs)
    # bookkeeping restarted with the new episode
    obs2, _, _, _, info = env.step(np.zeros(2, dtype=np.int64))
    assert "episode" not in info
    np.testing.assert_array_equal(obs2[:, :-1], obs[:, 1:])


def test_evaluation_env_waits_for_a_masked_reset():
    env = make_atari_env(["Pong", "Breakout"], 1, seed=0, evaluation=True,
                         max_episode_frames=120)  # 30 steps
    assert env.autoreset_mode == gym.vector.AutoresetMode.DISABLED
    noop = np.zeros(2, dtype=np.int64)
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(noop)
    before = obs
    obs, _ = env.reset(options={"reset_mask": np.array([True, False])})  # restart Pong only
    np.testing.assert_array_equal(obs[1], before[1])
    assert not np.array_equal(obs[0], before[0])
    for _ in range(20):
        prev = obs
        obs, _, term, trunc, info = env.step(noop)
    # Breakout (30 steps) ended; Pong (restarted, 20 steps) goes on
    np.testing.assert_array_equal(trunc, [False, True])
    assert info["episode"]["length"][1] == 30 and not term.any()
    # with autoreset disabled the returned obs is the episode's last one
    np.testing.assert_array_equal(info["final_obs"], obs)
    np.testing.assert_array_equal(obs[1, :-1], prev[1, 1:])
    with pytest.raises(RuntimeError, match="reset the finished envs"):
        env.step(noop)
    last = obs
    obs, _ = env.reset(options={"reset_mask": np.array([False, True])})
    np.testing.assert_array_equal(obs[0], last[0])
    assert not np.array_equal(obs[1], last[1])
    for _ in range(10):
        obs, _, term, trunc, info = env.step(noop)
    np.testing.assert_array_equal(trunc, [True, False])
    assert info["episode"]["length"][0] == 30
    env.set_goals(np.zeros(2, dtype=np.int64), np.ones(2, dtype=bool))  # harmless no-ops
    env.set_terminate_on_success(True)


def test_evaluate_runs_episodes_per_game_and_reports_hns():
    env = make_atari_env(["Pong", "Breakout"], 1, seed=0, evaluation=True,
                         max_episode_frames=160)

    class RandomActor:
        rng = np.random.default_rng(0)

        def act(self, obs, task_id, deterministic=False):
            return _rand(self.rng, len(task_id))

    res = evaluate(RandomActor(), env, 3, seed=1)
    assert res.episodes == {"Pong": 3, "Breakout": 3}
    for g in ("Pong", "Breakout"):
        assert res.returns[g] == pytest.approx(np.mean(res.episode_return[g]))
        assert res.hns[g] == pytest.approx(human_normalized_score(g, res.returns[g]))
        assert res.success[g] == 0.0


def test_state_dict_restores_the_episode_seed_stream():
    a = make_atari_env(["Pong"], 2, seed=0)
    a.reset(seed=5)
    for _ in range(3):
        a.step(np.zeros(2, dtype=np.int64))
    state = a.state_dict()
    expected, _ = a.reset()
    b = make_atari_env(["Pong"], 2, seed=99)
    b.reset(seed=99)
    b.load_state_dict(state)
    got, _ = b.reset()
    np.testing.assert_array_equal(got, expected)
    assert a.restores_exactly is False


def test_reward_scales_scale_step_rewards_not_the_game_score():
    env = make_atari_env(["SpaceInvaders"], 1, seed=0, max_episode_frames=1200)
    env.set_reward_scales([0.5])
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    score, scaled = 0.0, 0.0
    for _ in range(300):
        _, rew, _, trunc, info = env.step(_rand(rng, 1))
        score += float(info["raw_reward"][0])
        scaled += float(rew[0])
    assert trunc[0] and score > 0
    assert scaled == pytest.approx(0.5 * score)
    assert info["episode"]["return"][0] == pytest.approx(score)


# ---------------------------------------------------------------------------- config


def _atari_cfg(**env_changes) -> C.TrainConfig:
    cfg = C.TrainConfig(env=C.EnvConfig(name="atari", tasks=["Pong", "Breakout"]),
                        agent=C.AgentConfig(name="mta2c"), warmup_steps=0)
    for k, v in env_changes.items():
        setattr(cfg.env, k, v)
    return cfg


def test_config_builds_training_and_evaluation_envs():
    cfg = _atari_cfg(envs_per_task=3, clip_rewards=True, max_episode_frames=4000)
    C.validate(cfg)
    assert C.task_names(cfg.env) == ["Pong", "Breakout"]
    env = make_env(cfg.env, seed=0)
    assert env.num_envs == 6 and env.benchmark["reward_clipping"] is True
    assert env.max_episode_steps == 1000
    np.testing.assert_array_equal(env.task_ids, [0, 0, 0, 1, 1, 1])
    ev = make_env(cfg.env, seed=0, evaluation=True)
    assert ev.num_envs == 2 and ev.autoreset_mode == gym.vector.AutoresetMode.DISABLED
    env.close()
    ev.close()


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"tasks": ["Pong", "Pongg"]}, "env.tasks contains unknown Atari game(s) ['Pongg']"),
        ({"tasks": []}, "env.tasks is empty; env.name='atari' needs a list of games"),
        ({"tasks": ["Pong", "Pong"]}, "lists a game twice"),
        ({"sticky_actions": 1.5}, "env.sticky_actions=1.5 must be in [0, 1]"),
        ({"noop_max": -1}, "env.noop_max=-1 must be >= 0"),
        ({"frame_skip": 0}, "env.frame_skip=0 must be > 0"),
        ({"frame_stack": 0}, "env.frame_stack=0 must be > 0"),
        ({"num_threads": -2}, "env.num_threads=-2 must be >= 0"),
        ({"max_episode_frames": 3}, "env.max_episode_frames=3 must be >= env.frame_skip=4"),
        ({"envs_per_task": 0}, "env.envs_per_task=0 must be > 0"),
    ],
)
def test_atari_config_errors_name_the_field(changes, expect):
    with pytest.raises(C.ConfigError) as e:
        C.validate(_atari_cfg(**changes))
    assert expect in str(e.value)


def test_unknown_game_message_lists_valid_names_and_atari_fields_need_atari():
    with pytest.raises(C.ConfigError) as e:
        C.validate(_atari_cfg(tasks=["Pongg"]))
    assert "valid names:" in str(e.value) and "SpaceInvaders" in str(e.value)
    toy = C.TrainConfig(env=C.EnvConfig(name="toy-reach", clip_rewards=True))
    with pytest.raises(C.ConfigError) as e:
        C.validate(toy)
    assert "env.clip_rewards=True is only used with env.name='atari'" in str(e.value)


# ---------------------------------------------------------------------------- scores


def test_reference_scores_and_human_normalized_score():
    assert set(REFERENCE_SCORES) == set(ATARI57)
    assert REFERENCE_SCORES["Pong"] == (-20.7, 14.6)
    assert REFERENCE_SCORES["Breakout"] == (1.7, 30.5)
    assert human_normalized_score("Pong", -20.7) == 0.0
    assert human_normalized_score("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalized_score("Pong", 0.0) == pytest.approx(20.7 / 35.3)
    assert human_normalized_score("Breakout", 59.3) == pytest.approx(2.0)  # 1.7 + 2 * 28.8
    assert human_normalized_score("SpaceInvaders", 908.35) == pytest.approx(0.5)
    assert math.isnan(human_normalized_score("Pooyan", 100.0))  # a ROM outside Atari-57
    with pytest.raises(KeyError, match="unknown Atari game"):
        human_normalized_score("NotAGame", 1.0)


def test_summarize_median_and_mean():
    s = summarize({"Pong": 14.6, "Breakout": 1.7, "SpaceInvaders": 908.35, "Boxing": 24.1,
                   "Pooyan": 5.0})
    hns = s["hns"]
    assert hns["Pong"] == pytest.approx(1.0) and hns["Breakout"] == pytest.approx(0.0)
    assert hns["SpaceInvaders"] == pytest.approx(0.5)
    assert hns["Boxing"] == pytest.approx(2.0)  # (24.1 - 0.1) / (12.1 - 0.1)
    assert math.isnan(hns["Pooyan"])
    assert s["num_games"] == 4
    assert s["median"] == pytest.approx(0.75) and s["mean"] == pytest.approx(0.875)


def test_skiing_takes_the_shared_18_actions_through_its_9_legal_ones():
    """ale-py 0.12's Skiing has 9 legal actions (no FIRE) even with the full action space; the
    shared 18 actions reach it with FIRE dropped (FIRE = NOOP, UPFIRE = UP, ...), so a Skiing
    run (atari57 presets) builds and acts."""
    from mtrl.envs.atari import full_action_map

    assert full_action_map("Pong") is None
    amap = full_action_map("Skiing")
    assert amap.tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]

    def frames(actions: list[int]) -> np.ndarray:
        env = make_atari_env(["Skiing", "Pong"], 1, seed=3, noop_max=0,
                             repeat_action_probability=0.0)
        try:
            obs, _ = env.reset(seed=3)
            out = [obs[0]]
            for a in actions:
                obs, *_ = env.step(np.array([a, 0]))
                out.append(obs[0])
            return np.stack(out)
        finally:
            env.close()

    right = frames([3] * 30)  # RIGHT
    assert np.array_equal(frames([11] * 30), right)  # RIGHTFIRE = RIGHT
    assert np.array_equal(frames([1] * 30), frames([0] * 30))  # FIRE = NOOP
    assert not np.array_equal(frames([4] * 30), right)  # LEFT is another move
