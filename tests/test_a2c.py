"""MT-A2C: returns, losses, PopArt advantages, gradients, storage, runs (equations checked
against hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtrl import config as C
from mtrl.agents.a2c import MTA2C, A2CHyperparams, build_mta2c
from mtrl.data.rollout import RolloutBatch, RolloutStorage, bootstrap_values, gae
from mtrl.modules.actor_critic import ActorCritic
from mtrl.presets import get_preset


# ----------------------------------------------------------------------------- returns
def _two_env_example(truncate: bool = True):
    # env 0: no episode end; env 1: terminated at t=0, cut by a time limit (or terminated) at t=1
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    values = torch.tensor([[0.5, 0.2], [1.0, 0.4], [1.5, 0.6]])
    last = torch.tensor([2.0, 3.0])
    terminated = torch.tensor([[False, True], [False, not truncate], [False, False]])
    truncated = torch.tensor([[False, False], [False, truncate], [False, False]])
    trunc_value = torch.zeros(3, 2)
    trunc_value[1, 1] = 5.0
    return rewards, values, last, terminated, truncated, trunc_value


def test_gae_against_hand_computed_values_with_truncation_and_termination():
    r, v, last, term, trunc, tv = _two_env_example()
    nxt = bootstrap_values(v, last, term, trunc, tv)
    assert nxt.tolist() == [[1.0, 0.0], [1.5, 5.0], [2.0, 3.0]]
    adv = gae(r, v, nxt, term | trunc, gamma=0.9, lam=0.5)
    # env 0: δ = (1.4, 2.35, 3.3); A2 = 3.3, A1 = 2.35 + .45·3.3, A0 = 1.4 + .45·A1
    a1 = 2.35 + 0.45 * 3.3
    expected0 = [1.4 + 0.45 * a1, a1, 3.3]
    # env 1: terminal at t0 (no bootstrap, trace cut); time limit at t1 bootstraps from
    # V(final obs) = 5 but cuts the trace: A1 = 1 + .9·5 − .4; A2 = 1 + .9·3 − .6
    expected1 = [0.8, 5.1, 3.1]
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected0), rtol=0, atol=1e-6)
    torch.testing.assert_close(adv[:, 1], torch.tensor(expected1), rtol=0, atol=1e-6)


def test_termination_does_not_bootstrap_where_truncation_does():
    r, v, last, term, trunc, tv = _two_env_example(truncate=False)
    nxt = bootstrap_values(v, last, term, trunc, tv)
    adv = gae(r, v, nxt, term | trunc, gamma=0.9, lam=0.5)
    assert adv[1, 1].item() == pytest.approx(1.0 - 0.4)  # terminal: r − V, no γ·V(final)


def test_lambda_one_gives_n_step_returns():
    r, v, last, term, trunc, tv = _two_env_example()
    nxt = bootstrap_values(v, last, term, trunc, tv)
    g = gae(r, v, nxt, term | trunc, gamma=0.9, lam=1.0) + v
    # env 0: G2 = 3 + .9·2, G1 = 2 + .9·G2, G0 = 1 + .9·G1 (A3C, Algorithm S3)
    g2 = 3 + 0.9 * 2.0
    g1 = 2 + 0.9 * g2
    torch.testing.assert_close(g[:, 0], torch.tensor([1 + 0.9 * g1, g1, g2]))
    torch.testing.assert_close(g[:, 1], torch.tensor([1.0, 1 + 0.9 * 5.0, 1 + 0.9 * 3.0]))


# ----------------------------------------------------------------------------- storage
def test_rollout_storage_batches_task_major_and_bootstraps_truncations():
    task_ids = np.array([1, 0, 1, 0])  # envs not sorted by task
    st = RolloutStorage(2, task_ids, (1,), discrete=True)
    st.start(np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32))
    for t in range(2):
        obs = np.array([[10.0 * (t + 1) + i] for i in range(4)], dtype=np.float32)
        st.add(torch.tensor([t, t, t, t]), torch.zeros(4), np.ones(4, np.float32),
               np.zeros(4, bool), np.array([False, False, t == 0, False]), obs)
        if t == 0:
            st.set_truncation_value(np.array([False, False, True, False]), torch.tensor([7.0]))
    b = st.batch(torch.zeros(4), gamma=0.5, lam=1.0)
    assert b.task_id.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # task 0 = envs 1, 3; task 1 = envs 0, 2; each env contributes steps 0, 1 in order
    assert b.obs[:, 0].tolist() == [1.0, 11.0, 3.0, 13.0, 0.0, 10.0, 2.0, 12.0]
    assert b.per_task == 4
    # env 2 was truncated at t=0: G0 = 1 + .5·7 (not 1 + .5·G1)
    assert b.returns.tolist() == [1.5, 1.0, 1.5, 1.0, 1.5, 1.0, 4.5, 1.0]
    st.after_update()
    assert st.obs[0, :, 0].tolist() == [20.0, 21.0, 22.0, 23.0]


def test_storage_refuses_unequal_task_counts():
    with pytest.raises(ValueError, match="same number of envs"):
        RolloutStorage(2, np.array([0, 0, 1]), (1,))


def test_uint8_observations_stay_uint8_on_the_learner():
    st = RolloutStorage(1, np.array([0, 1]), (4, 84, 84), obs_dtype=torch.uint8)
    frames = np.full((2, 4, 84, 84), 200, dtype=np.uint8)
    st.start(frames)
    st.add(torch.tensor([3, 4]), torch.zeros(2), np.zeros(2, np.float32), np.zeros(2, bool),
           np.zeros(2, bool), frames)
    b = st.batch(torch.zeros(2), 0.99, 1.0)
    assert b.obs.dtype == torch.uint8 and b.obs.shape == (2, 4, 84, 84)
    assert st.obs.element_size() == 1


# ----------------------------------------------------------------------------- losses
def _linear_agent(popart: bool = False) -> MTA2C:
    """3 actions, 2 tasks, obs_dim 1: policy logits = bias, V = bias (zero weights)."""
    agent = build_mta2c(obs_shape=(1,), num_tasks=2, num_actions=3, actor_hidden=[],
                        critic_hidden=[], torso="none", popart=popart,
                        hparams=A2CHyperparams(ent_coef=0.01, vf_coef=0.5))
    net = agent.net
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        lin = net.policy.net[0]
        lin.bias.copy_(torch.tensor([0.0, math.log(2.0), 0.0]))  # π = (1/4, 1/2, 1/4)
        if not popart:
            net.value_net.net[0].bias.fill_(1.0)  # V ≡ 1
    return agent


def _tiny_batch(returns, value, action=(1, 0)) -> RolloutBatch:
    return RolloutBatch(
        obs=torch.zeros(2, 1), action=torch.tensor(action), value=torch.tensor(value),
        returns=torch.tensor(returns), task_id=torch.tensor([0, 1]), num_tasks=2,
    )


def test_a2c_losses_on_a_tiny_example():
    agent = _linear_agent()
    out = agent.losses(_tiny_batch([3.0, 0.0], [1.0, 1.0]))
    h = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))  # entropy of (1/4, 1/2, 1/4)
    # task 0: a=1, A = 3 − 1 = 2: −log(1/2)·2 + .5·(1 − 3)² − .01·H
    t0 = -math.log(0.5) * 2 + 0.5 * 4.0 - 0.01 * h
    # task 1: a=0, A = 0 − 1 = −1: −log(1/4)·(−1) + .5·(1 − 0)² − .01·H
    t1 = -math.log(0.25) * -1 + 0.5 * 1.0 - 0.01 * h
    torch.testing.assert_close(out["per_task"], torch.tensor([t0, t1]))
    torch.testing.assert_close(out["entropy"], torch.tensor([h, h]))


def test_popart_normalized_advantage_is_the_papers_formula():
    torch.manual_seed(0)
    agent = build_mta2c(obs_shape=(3,), num_tasks=2, num_actions=4, actor_hidden=[8],
                        critic_hidden=[8], popart=True, popart_beta=0.1)
    net = agent.net
    obs = torch.randn(8, 3)
    tid = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    with torch.no_grad():
        v_before = net.value(obs, tid)
    g = torch.tensor([1.0, 2.0, 3.0, 6.0, 100.0, 300.0, 200.0, 400.0])
    batch = RolloutBatch(obs, torch.zeros(8, dtype=torch.long), v_before, g, tid, 2)
    target, adv = agent.targets(batch)
    stats = net.popart
    # first (debiased) update: μ' = mean, σ' = population std of each task's returns
    mu = torch.tensor([3.0, 250.0])
    sigma = torch.tensor([np.std([1, 2, 3, 6]), np.std([100, 300, 200, 400])],
                         dtype=torch.float32)
    torch.testing.assert_close(stats.mu, mu)
    torch.testing.assert_close(stats.sigma, sigma)
    with torch.no_grad():
        _, n_new = net(obs, tid)
        v_after = net.value(obs, tid)
    torch.testing.assert_close(v_after, v_before, rtol=1e-5, atol=1e-4)  # outputs preserved
    s = sigma.repeat_interleave(4)
    m = mu.repeat_interleave(4)
    # Hessel et al. 2019: Ã = (G − μ)/σ − n(s), with the updated statistics and head
    torch.testing.assert_close(adv, (g - m) / s - n_new, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adv, (g - v_before) / s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(target, (g - m) / s)


def test_popart_skips_tasks_whose_returns_carry_no_scale():
    agent = build_mta2c(obs_shape=(3,), num_tasks=2, num_actions=4, actor_hidden=[8],
                        critic_hidden=[8], popart=True, popart_beta=0.1)
    net = agent.net
    obs, tid = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        v = net.value(obs, tid)
    w_before = net.value_head.weight.detach().clone()
    g = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 6.0])  # task 0 scored nothing
    agent.targets(RolloutBatch(obs, torch.zeros(6, dtype=torch.long), v, g, tid, 2))
    stats = net.popart
    assert stats.count.tolist() == [0, 1]
    assert stats.mu[0].item() == 0.0 and stats.sigma[0].item() == 1.0  # untouched
    torch.testing.assert_close(net.value_head.weight[0], w_before[0])  # not rescaled
    assert stats.mu[1].item() == pytest.approx(3.0)
    assert stats.sigma[1].item() == pytest.approx(float(np.std([1.0, 2, 6])), rel=1e-5)


def test_policy_and_value_losses_reach_only_their_own_parameters():
    agent = build_mta2c(obs_shape=(3,), num_tasks=2, num_actions=4, actor_hidden=[8],
                        critic_hidden=[8], popart=True)
    net = agent.net
    batch = RolloutBatch(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), torch.zeros(4),
                         torch.randn(4), torch.tensor([0, 0, 1, 1]), 2)
    out = agent.losses(batch)
    net.zero_grad(set_to_none=True)
    out["policy"].mean().backward(retain_graph=True)
    assert all(p.grad is None for p in net.value_trunk.parameters())
    assert net.value_head.weight.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.policy.parameters())
    net.zero_grad(set_to_none=True)
    out["value"].mean().backward()
    assert all(p.grad is None for p in net.policy.parameters())
    assert net.value_head.weight.grad.abs().sum() > 0


def test_shared_cnn_torso_gets_gradient_from_both_losses():
    agent = build_mta2c(obs_shape=(4, 84, 84), num_tasks=2, num_actions=18, actor_hidden=[],
                        critic_hidden=[], popart=True)
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    batch = RolloutBatch(obs, torch.tensor([0, 5, 17, 3]), torch.zeros(4), torch.randn(4),
                         torch.tensor([0, 0, 1, 1]), 2)
    for term in ("policy", "value"):
        agent.net.zero_grad(set_to_none=True)
        agent.losses(batch)[term].mean().backward()
        conv = agent.net.torso.convs[0].weight
        assert conv.grad is not None and conv.grad.abs().sum() > 0, term


def test_gaussian_log_prob_and_entropy_match_torch():
    torch.manual_seed(0)
    net = ActorCritic((5,), 3, action_dim=2, actor_hidden=[8], critic_hidden=[8])
    with torch.no_grad():
        net.log_std_net.log_std.copy_(torch.tensor([[0.1, -0.3], [0.0, 0.5], [-1.0, 0.2]]))
    obs, tid = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    mean, _ = net(obs, tid)
    a = net.sample(mean, tid)
    lp, ent = net.log_prob_entropy(mean, a, tid)
    dist = torch.distributions.Normal(mean, net.log_std(tid).exp())
    torch.testing.assert_close(lp, dist.log_prob(a).sum(-1))
    torch.testing.assert_close(ent, dist.entropy().sum(-1))


def test_categorical_sampling_follows_the_policy():
    net = ActorCritic((1,), 1, num_actions=3, actor_hidden=[], critic_hidden=[], torso="none")
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(40_000, 3)
    torch.manual_seed(0)
    a = net.sample(logits, torch.zeros(40_000, dtype=torch.long))
    freq = torch.bincount(a, minlength=3).float() / 40_000
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.01, rtol=0)


def test_save_load_gives_identical_actions():
    a = build_mta2c(obs_shape=(3,), num_tasks=2, num_actions=5, actor_hidden=[16],
                    critic_hidden=[16])
    b = build_mta2c(obs_shape=(3,), num_tasks=2, num_actions=5, actor_hidden=[16],
                    critic_hidden=[16])
    obs, tid = np.random.default_rng(0).normal(size=(64, 3)), np.arange(64) % 2
    assert not np.array_equal(a.act(obs, tid, True), b.act(obs, tid, True))
    b.load_state_dict(a.state_dict())
    assert np.array_equal(a.act(obs, tid, True), b.act(obs, tid, True))


# ----------------------------------------------------------------------------- config
def test_config_errors_name_the_field():
    cfg = get_preset("toy-a2c")
    cfg.warmup_steps = 1000
    with pytest.raises(C.ConfigError, match=r"warmup_steps=1000.*on-policy"):
        C.validate(cfg)
    cfg = get_preset("toy-a2c")
    cfg.agent.torso = "nature-cnn"
    with pytest.raises(C.ConfigError, match=r"agent\.torso='nature-cnn'"):
        C.validate(cfg)
    cfg = get_preset("toy-a2c")
    cfg.agent.a2c.gae_lambda = 1.5
    with pytest.raises(C.ConfigError, match=r"agent\.a2c\.gae_lambda"):
        C.validate(cfg)
    cfg = get_preset("toy-a2c")
    cfg.agent.a2c.optimizer = "sgd"
    with pytest.raises(C.ConfigError,
                       match=r"agent\.a2c\.optimizer='sgd'.*rmsprop, rmsprop-tf, adam"):
        C.validate(cfg)
    cfg = get_preset("toy-a2c")
    cfg.agent.name = "mtsac"
    cfg.warmup_steps = 100
    with pytest.raises(C.ConfigError, match=r"discrete actions.*mta2c"):
        C.validate(cfg)


# ----------------------------------------------------------------------------- runs
def _tiny_a2c(total_steps: int = 640, **changes):
    cfg = get_preset("toy-a2c")
    cfg.total_steps = total_steps
    cfg.agent.actor_hidden = [16]
    cfg.agent.critic_hidden = [16]
    cfg.eval.every = 0
    cfg.eval.final = False
    cfg.log.every = 160
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 320
    cfg.device = "cpu"
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def _final(run_dir):
    from mtrl.checkpoint import CheckpointManager, load_file

    return load_file(CheckpointManager(run_dir / "checkpoints").latest().path)


def test_seeded_a2c_runs_are_identical_and_resume_equals_uninterrupted(tmp_path):
    from mtrl.runner import train

    train(_tiny_a2c(), tmp_path / "a")
    train(_tiny_a2c(), tmp_path / "b")
    train(_tiny_a2c(total_steps=320), tmp_path / "part")
    train(_tiny_a2c(), tmp_path / "part", resume=True)
    a, b, r = (_final(tmp_path / d) for d in ("a", "b", "part"))
    for other in (b, r):
        for k, t in a["agent"]["net"].items():
            assert torch.equal(t, other["agent"]["net"][k]), k
        assert a["loop"] == other["loop"]
    assert a["loop"]["env_steps"] == 640 and a["loop"]["updates"] == 640 // (16 * 5)
    c = train(_tiny_a2c(seed=1), tmp_path / "c")
    assert c.env_steps == 640
    assert not torch.equal(_final(tmp_path / "c")["agent"]["net"]["policy.net.0.weight"],
                           a["agent"]["net"]["policy.net.0.weight"])


def test_toy_a2c_learns_and_its_saved_policy_evaluates_the_same(tmp_path):
    """The preset as shipped (120k env steps, ~10 s): >= 0.9 success on all four goals."""
    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    cfg = get_preset("toy-a2c")
    cfg.log.progress_bar = False
    cfg.device = "cpu"
    res = train(cfg, tmp_path / "run")
    assert res.final_eval is not None
    assert res.final_eval.success_mean >= 0.9, res.final_eval.table()
    again = evaluate_run(str(tmp_path / "run"), device="cpu")
    assert again.result.success == res.final_eval.success
    assert again.result.returns == res.final_eval.returns


def test_atari_a2c_run_logs_returns_hns_and_popart_and_evaluates(tmp_path):
    """A tiny two-game Atari run end to end: uint8 frames through the device storage, per-game
    returns, human-normalized scores and PopArt statistics in TensorBoard, `mtrl eval` lists
    the games."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    cfg = get_preset("atari6-a2c-popart")
    cfg.env.tasks = ["Pong", "Breakout"]
    cfg.env.envs_per_task = 2
    cfg.env.max_episode_frames = 400  # 100-step episodes: several end within the run
    cfg.total_steps = 800
    cfg.agent.a2c.n_steps = 5
    cfg.eval.every = 0
    cfg.eval.episodes_per_task = 1
    cfg.log.every = 200
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 0
    cfg.device = "cpu"
    res = train(cfg, tmp_path / "run")
    assert res.env_steps == 800 and res.updates == 800 // 20
    assert res.final_eval is not None and set(res.final_eval.hns) == {"Pong", "Breakout"}
    ea = EventAccumulator(str(tmp_path / "run"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for g in ("Pong", "Breakout"):
        for t in (f"train/episode_return/{g}", f"train/hns/{g}", f"popart/mu/{g}",
                  f"popart/sigma/{g}", f"eval/return/{g}", f"eval/hns/{g}"):
            assert t in tags, t
        assert f"train/success/{g}" not in tags  # Atari has no success flag
    assert {"train/hns_median", "eval/hns_median"} <= tags
    ev = evaluate_run(str(tmp_path / "run"), episodes_per_task=1, device="cpu")
    assert list(ev.result.task_names) == ["Pong", "Breakout"]
    assert "human-normalized" in ev.to_json()["protocol"]


def test_popart_keeps_statistics_of_a_task_without_rewards_in_the_rollout():
    # returns that vary only through bootstrapped values carry no reward scale
    agent = build_mta2c(obs_shape=(3,), num_tasks=2, num_actions=4, actor_hidden=[8],
                        critic_hidden=[8], popart=True, popart_beta=0.1)
    obs, tid = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        v = agent.net.value(obs, tid)
    g = torch.tensor([0.01, 0.02, 0.03, 1.0, 2.0, 6.0])
    reward = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 5.0])  # task 0 scored nothing
    agent.targets(RolloutBatch(obs, torch.zeros(6, dtype=torch.long), v, g, tid, 2, reward))
    stats = agent.net.popart
    assert stats.count.tolist() == [0, 1]
    assert stats.sigma[0].item() == 1.0
    # without the rewards (e.g. a hand-made batch) only constant returns are skipped
    agent2 = build_mta2c(obs_shape=(3,), num_tasks=2, num_actions=4, actor_hidden=[8],
                         critic_hidden=[8], popart=True, popart_beta=0.1)
    agent2.targets(RolloutBatch(obs, torch.zeros(6, dtype=torch.long), v, g, tid, 2))
    assert agent2.net.popart.count.tolist() == [1, 1]


def test_tf_rmsprop_starts_its_mean_square_at_one_and_saves():
    from mtrl.agents.a2c import RMSpropTF

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([p], lr=0.1, alpha=0.9, eps=0.0)
    p.grad = torch.tensor([0.5, 3.0])
    opt.step()
    # v = 0.9·1 + 0.1·g²;  p ← p − lr·g/√v   (PyTorch's RMSprop would use v = 0.1·g²)
    v = 0.9 + 0.1 * torch.tensor([0.25, 9.0])
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -2.0]) - 0.1 * torch.tensor(
        [0.5, 3.0]) / v.sqrt())
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = RMSpropTF([q], lr=0.1, alpha=0.9, eps=0.0)
    opt2.load_state_dict(opt.state_dict())
    torch.testing.assert_close(opt2.state[q]["square_avg"], v)
