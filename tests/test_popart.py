"""PopArt: statistics, output preservation, normalization order, and MT-SAC with PopArt."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import tiny_toy_config
from test_sac import _batch

from mtrl.agents import build_agent
from mtrl.config import AgentConfig
from mtrl.modules.popart import (
    PopArtStatistics,
    PopArtValueHead,
    TaskValueHead,
    preserve_outputs_,
)
from mtrl.runner import train


def test_one_update_by_hand():
    stats = PopArtStatistics(2, beta=0.1, debias=False)
    y = torch.tensor([[1.0, 3.0], [10.0, 10.0]])
    old_mu, old_sigma, mu, sigma = stats.update(y)
    # mu: 0.9·0 + 0.1·[2, 10]; nu: 0.9·1 + 0.1·[5, 100]
    np.testing.assert_allclose(old_mu.numpy(), [0.0, 0.0])
    np.testing.assert_allclose(old_sigma.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(mu.numpy(), [0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(stats.nu.numpy(), [1.4, 10.9], rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), [math.sqrt(1.4 - 0.04), math.sqrt(10.9 - 1.0)],
                               rtol=1e-6)


def test_debiased_first_update_takes_the_batch_moments():
    stats = PopArtStatistics(2, beta=0.01, debias=True)
    stats.update(torch.tensor([[1.0, 3.0], [-4.0, -4.0]]))
    np.testing.assert_allclose(stats.mu.numpy(), [2.0, -4.0], rtol=1e-6)
    np.testing.assert_allclose(stats.nu.numpy(), [5.0, 16.0], rtol=1e-6)
    # second step: beta_2 = 0.01 / (1 - 0.99²)
    b2 = 0.01 / (1 - 0.99**2)
    stats.update(torch.tensor([[0.0, 0.0], [-4.0, -4.0]]))
    np.testing.assert_allclose(stats.mu.numpy(), [2.0 * (1 - b2), -4.0], rtol=1e-5)


def test_statistics_converge_on_a_known_stream():
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([0.5, -30.0, 2000.0])
    stds = torch.tensor([1.0, 100.0, 1e4])
    stats = PopArtStatistics(3, beta=1e-3)
    for _ in range(6000):
        stats.update(means[:, None] + stds[:, None] * torch.randn(3, 64, generator=gen))
    np.testing.assert_allclose(stats.sigma.numpy(), stds.numpy(), rtol=0.05)
    assert abs(float(stats.mu[0]) - 0.5) < 0.1
    assert abs(float(stats.mu[1]) + 30.0) < 10.0
    assert abs(float(stats.mu[2]) - 2000.0) < 1000.0


def test_outputs_are_preserved_exactly():
    torch.manual_seed(0)
    head = PopArtValueHead(5, 3, beta=0.3).double()
    h = torch.randn(12, 5, dtype=torch.float64)
    tid = torch.arange(3).repeat_interleave(4)
    before = head.unnormalized(h, tid)
    for scale in (1.0, 1e3, 1e-2):
        head.update_statistics(scale * torch.randn(3, 8, dtype=torch.float64) + 7.0)
        after = head.unnormalized(h, tid)
        np.testing.assert_allclose(after.detach().numpy(), before.detach().numpy(),
                                   rtol=0, atol=1e-6 * max(1.0, before.abs().max().item()))


def test_heads_sharing_statistics_all_preserved_in_float32():
    torch.manual_seed(1)
    stats = PopArtStatistics(2, beta=0.5)
    heads = [TaskValueHead(4, 2) for _ in range(3)]
    h = torch.randn(6, 4)
    tid = torch.tensor([0, 0, 0, 1, 1, 1])
    before = [stats.denormalize_ids(hd(h, tid), tid).detach() for hd in heads]
    old = stats.update(torch.tensor([[50.0, 60.0, 70.0], [-1.0, 1.0, 0.5]]))
    for hd in heads:
        preserve_outputs_(hd.weight, hd.bias, *old)
    for hd, b in zip(heads, before, strict=True):
        after = stats.denormalize_ids(hd(h, tid), tid).detach()
        torch.testing.assert_close(after, b, rtol=1e-6, atol=1e-5)


def test_targets_are_normalized_with_the_new_statistics():
    head = PopArtValueHead(3, 2, beta=0.5, stats=PopArtStatistics(2, beta=0.5, debias=False))
    y = torch.tensor([[4.0, 6.0], [0.0, 2.0]])
    normalized = head.update_statistics(y)
    mu = 0.5 * y.mean(1)  # from mu = 0
    nu = 0.5 * 1.0 + 0.5 * y.pow(2).mean(1)  # from nu = 1
    sigma = (nu - mu**2).sqrt()
    torch.testing.assert_close(normalized, (y - mu[:, None]) / sigma[:, None])


def test_constant_and_huge_targets_stay_finite():
    stats = PopArtStatistics(2, beta=1.0)
    stats.update(torch.tensor([[3.0, 3.0, 3.0], [1e7, 1e7, 1e7]]))
    sigma = stats.sigma
    assert torch.isfinite(sigma).all() and (sigma > 0).all()
    assert float(sigma[0]) == pytest.approx(1e-4)  # clamped at sigma_min
    n = stats.normalize(torch.tensor([[3.0, 3.0, 3.0], [1e7, 1e7, 1e7]]))
    assert torch.isfinite(n).all()
    w, b = torch.ones(2, 4), torch.zeros(2)
    preserve_outputs_(w, b, *stats.update(torch.full((2, 3), 3.0)))
    assert torch.isfinite(w).all() and torch.isfinite(b).all()


def test_head_gradient_reaches_only_its_task_row():
    head = TaskValueHead(3, 4)
    h = torch.randn(5, 3)
    tid = torch.tensor([2, 2, 2, 0, 0])
    head(h[:3], tid[:3]).sum().backward()
    assert head.weight.grad is not None and head.bias.grad is not None
    assert torch.count_nonzero(head.weight.grad[[0, 1, 3]]) == 0
    torch.testing.assert_close(head.weight.grad[2], h[:3].sum(0))
    torch.testing.assert_close(head.bias.grad, torch.tensor([0.0, 0.0, 3.0, 0.0]))


def test_state_dict_round_trip():
    stats = PopArtStatistics(2, beta=0.2)
    stats.update(torch.randn(2, 5))
    stats.update(torch.randn(2, 5) * 3)
    other = PopArtStatistics(2, beta=0.2)
    other.load_state_dict(stats.state_dict())
    for name in ("mu", "nu", "count"):
        assert torch.equal(getattr(other, name), getattr(stats, name))


# ----------------------------------------------------------------------------- in MT-SAC


def _popart_agent():
    torch.manual_seed(0)
    cfg = AgentConfig(actor_hidden=[8], critic_hidden=[8, 8], batch_size=6, popart=True,
                      popart_beta=0.5)
    return build_agent(cfg, obs_dim=2, action_dim=1, num_tasks=2, device=torch.device("cpu"))


def test_sac_update_preserves_target_outputs_and_uses_normalized_targets(monkeypatch):
    agent = _popart_agent()
    batch = _batch(0)
    batch = batch._replace(reward=batch.reward * torch.tensor([1.0] * 3 + [100.0] * 3))
    target_before = agent.critic_target(batch.obs, batch.action, batch.task_id)
    captured = {}
    original = agent._popart_step

    def spy(y, b):
        captured["y"] = y.clone()
        captured["stats_before"] = (agent.critic.popart.mu.clone(),
                                    agent.critic.popart.sigma.clone())
        online = agent.critic(b.obs, b.action, b.task_id).detach()
        out = original(y, b)
        captured["online_preserved"] = (online, agent.critic(b.obs, b.action, b.task_id).detach())
        captured["target_after"] = agent.critic_target(b.obs, b.action, b.task_id).detach()
        captured["y_norm"] = out.clone()
        captured["stats_after"] = (agent.critic.popart.mu.clone(),
                                   agent.critic.popart.sigma.clone())
        return out

    monkeypatch.setattr(agent, "_popart_step", spy)
    agent.update(batch)
    # Rescaling changed no unnormalized output, online or target.
    torch.testing.assert_close(captured["target_after"], target_before.detach(),
                               rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(*captured["online_preserved"], rtol=1e-5, atol=1e-4)
    # Statistics after this step include this batch: debiased first step = batch moments.
    y = captured["y"].view(2, 3)
    mu, sigma = captured["stats_after"]
    torch.testing.assert_close(mu, y.mean(1))
    torch.testing.assert_close(sigma, (y.pow(2).mean(1) - y.mean(1).pow(2)).sqrt())
    torch.testing.assert_close(captured["y_norm"].view(2, 3), (y - mu[:, None]) / sigma[:, None])
    metrics = agent.task_metrics()
    torch.testing.assert_close(metrics["popart/mu"], agent.critic.popart.mu)
    torch.testing.assert_close(metrics["popart/sigma"], agent.critic.popart.sigma)


def test_sac_critic_loss_is_on_normalized_values():
    agent = _popart_agent()
    batch = _batch(1)
    agent.update(batch)  # statistics away from their initial values
    stats = agent.critic.popart
    q_norm = agent.critic.normalized(batch.obs, batch.action, batch.task_id)
    q = agent.critic(batch.obs, batch.action, batch.task_id)
    expect = q_norm * stats.sigma[batch.task_id] + stats.mu[batch.task_id]
    torch.testing.assert_close(q, expect)


def test_sac_popart_save_load_gives_identical_values_and_actions():
    agent = _popart_agent()
    for s in range(3):
        agent.update(_batch(s))
    state = copy.deepcopy(agent.state_dict())
    other = _popart_agent()
    other.load_state_dict(state)
    b = _batch(5)
    torch.testing.assert_close(other.critic(b.obs, b.action, b.task_id),
                               agent.critic(b.obs, b.action, b.task_id), rtol=0, atol=0)
    torch.testing.assert_close(other.critic_target.popart.mu, agent.critic.popart.mu)
    assert other.critic.popart is other.critic_target.popart
    obs = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    tid = np.array([0, 1, 0, 1])
    np.testing.assert_array_equal(other.act(obs, tid, deterministic=True),
                                  agent.act(obs, tid, deterministic=True))


def test_popart_run_logs_statistics_per_task(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_toy_config()
    cfg.agent.popart = True
    cfg.env.reward_scales = [1.0, 10.0, 100.0, 1000.0]
    train(cfg, tmp_path / "r")
    ea = EventAccumulator(str(tmp_path / "r"))
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for k in range(4):
        assert f"popart/mu/goal-{k}" in scalars and f"popart/sigma/goal-{k}" in scalars
    sig = [ea.Scalars(f"popart/sigma/goal-{k}")[-1].value for k in range(4)]
    assert sig[3] > 10 * sig[1] > 0  # reward scales show in the statistics


def test_reward_scales_multiply_task_rewards_and_are_validated():
    from mtrl.config import ConfigError, EnvConfig, validate
    from mtrl.envs import make_env

    env_cfg = EnvConfig(name="toy-reach", num_tasks=2, envs_per_task=2, max_episode_steps=5)
    plain = make_env(env_cfg, seed=3)
    env_cfg.reward_scales = [1.0, 1000.0]
    scaled = make_env(env_cfg, seed=3)
    plain.reset(seed=3)
    scaled.reset(seed=3)
    act = np.zeros((4, 2), dtype=np.float32)
    _, r0, *_ = plain.step(act)
    _, r1, *_ = scaled.step(act)
    np.testing.assert_allclose(r1, r0 * np.array([1, 1, 1000, 1000]), rtol=1e-6)
    assert scaled.benchmark["reward_scales"] == [1.0, 1000.0]
    cfg = tiny_toy_config()
    cfg.env.reward_scales = [1.0, 2.0]
    with pytest.raises(ConfigError, match=r"env\.reward_scales has 2 entries"):
        validate(cfg)
    cfg.env.reward_scales = [1.0, 2.0, 0.0, 1.0]
    with pytest.raises(ConfigError, match="must all be > 0"):
        validate(cfg)


def test_toy_popart_preset_learns_scaled_tasks(tmp_path):
    # ~20 s: MT-SAC + PopArt on the toy whose task rewards are scaled ×1 … ×1000 (without
    # PopArt the same run reaches 0.25; see tests/test_learning_slow.py).
    from mtrl.evaluation import evaluate_run
    from mtrl.presets import get_preset

    cfg = get_preset("toy-popart-sac")
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    train(cfg, tmp_path / "r")
    assert evaluate_run(str(tmp_path / "r")).result.success_mean >= 0.9
