"""PopArt: statistics, output preservation, normalization order, and MT-SAC with PopArt.

References: van Hasselt et al. 2016 (Sec. 2.1, Algorithm 1) and Hessel et al. 2019; see
``mtrl/modules/popart.py``. Every check compares numbers with a hand computation or a float64
reference.
"""

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
    PopArtHead,
    PopArtStatistics,
    PopArtUpdate,
    TaskValueHead,
    popart_update_,
    preserve_outputs_,
)
from mtrl.runner import train

# ----------------------------------------------------------------------------- statistics


def test_one_update_by_hand_without_debias():
    stats = PopArtStatistics(2, beta=0.1, debias=False)
    y = torch.tensor([[1.0, 3.0], [10.0, 10.0]])
    old_mu, old_sigma, mu, sigma = stats.update(y)
    # mu = 0.9·0 + 0.1·[2, 10];  nu = 0.9·1 + 0.1·[5, 100]
    np.testing.assert_allclose(old_mu.numpy(), [0.0, 0.0])
    np.testing.assert_allclose(old_sigma.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(mu.numpy(), [0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(stats.nu.numpy(), [1.4, 10.9], rtol=1e-6)
    np.testing.assert_allclose(
        sigma.numpy(), [math.sqrt(1.4 - 0.04), math.sqrt(10.9 - 1.0)], rtol=1e-6
    )
    assert stats.count.tolist() == [1, 1]
    # The returned tensors are copies: a later update does not change them.
    stats.update(y)
    np.testing.assert_allclose(mu.numpy(), [0.2, 1.0], rtol=1e-6)


def test_two_debiased_updates_by_hand():
    stats = PopArtStatistics(2, beta=0.25)  # debias=True is the default
    stats.update(torch.tensor([[1.0, 3.0], [-4.0, -4.0]]))
    # β_1 = 1: the first batch's moments, exactly.
    assert stats.mu.tolist() == [2.0, -4.0]
    assert stats.nu.tolist() == [5.0, 16.0]
    assert stats.sigma[0].item() == pytest.approx(1.0, rel=1e-6)
    assert stats.sigma[1].item() == pytest.approx(1e-4, rel=1e-5)  # constant task: σ_min
    # β_2 = 0.25 / (1 − 0.75²) = 4/7; batch moments: mean [1, −4], mean of squares [2, 20].
    old_mu, old_sigma, mu, sigma = stats.update(torch.tensor([[0.0, 2.0], [-2.0, -6.0]]))
    np.testing.assert_allclose(old_mu.numpy(), [2.0, -4.0])
    np.testing.assert_allclose(old_sigma.numpy(), [1.0, 1e-4], rtol=1e-5)
    np.testing.assert_allclose(mu.numpy(), [10 / 7, -4.0], rtol=1e-6)  # 2 + 4/7·(1 − 2)
    np.testing.assert_allclose(stats.nu.numpy(), [23 / 7, 128 / 7], rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), [math.sqrt(61) / 7, 4 / math.sqrt(7)], rtol=1e-6)
    assert stats.count.tolist() == [2, 2]


def test_debiased_statistics_are_normalized_exponential_averages():
    # Reference in float64 numpy: Σ_i (1 − β)^(t−i) m_i / Σ_i (1 − β)^(t−i), i.e. the initial
    # μ = 0, ν = 1 carry no weight at all.
    beta, steps = 0.1, 6
    rng = np.random.default_rng(0)
    batches = rng.normal(5.0, 3.0, size=(steps, 3, 4))
    stats = PopArtStatistics(3, beta=beta).double()
    for b in batches:
        stats.update(torch.from_numpy(b))
    w = (1 - beta) ** np.arange(steps - 1, -1, -1)
    mu = (w[:, None] * batches.mean(2)).sum(0) / w.sum()
    nu = (w[:, None] * (batches**2).mean(2)).sum(0) / w.sum()
    np.testing.assert_allclose(stats.mu.numpy(), mu, rtol=1e-12)
    np.testing.assert_allclose(stats.nu.numpy(), nu, rtol=1e-12)
    np.testing.assert_allclose(stats.sigma.numpy(), np.sqrt(nu - mu**2), rtol=1e-12)


def test_first_debiased_update_is_exact_for_small_beta_in_float32():
    stats = PopArtStatistics(3)  # β = 3e-4: 1 − 0.9997 in float32 would be off by ~1e-4
    assert stats.beta == 3e-4
    y = torch.tensor([[0.1, 0.7, 1.3], [-250.0, 17.0, 3.0], [1e4, 2e4, 4e4]])
    stats.update(y)
    assert torch.equal(stats.mu, y.mean(1))
    assert torch.equal(stats.nu, y.square().mean(1))
    b2 = 3e-4 / (1 - (1 - 3e-4) ** 2)
    np.testing.assert_allclose(stats.step_sizes().numpy(), [b2] * 3, rtol=1e-5)


def test_statistics_converge_on_a_known_stream():
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([2.0, -150.0, 3e4])
    stds = torch.tensor([1.0, 100.0, 1e4])
    stats = PopArtStatistics(3, beta=3e-3)
    noise = torch.randn(1500, 3, 128, generator=gen)
    for z in noise:
        stats.update(means[:, None] + stds[:, None] * z)
    np.testing.assert_allclose(stats.mu.numpy(), means.numpy(), rtol=0.02)
    np.testing.assert_allclose(stats.sigma.numpy(), stds.numpy(), rtol=0.02)


def test_update_rejects_unstratified_targets():
    stats = PopArtStatistics(3)
    with pytest.raises(ValueError, match="num_tasks=3"):
        stats.update(torch.zeros(6))
    with pytest.raises(ValueError, match="num_tasks=3"):
        stats.update(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="beta"):
        PopArtStatistics(3, beta=0.0)


# ----------------------------------------------------------------------------- normalization


def test_targets_are_normalized_with_the_new_statistics():
    stats = PopArtStatistics(2, beta=0.5, debias=False)
    head = PopArtHead(3, 2, stats=stats)
    y = torch.tensor([[4.0, 6.0], [0.0, 2.0]])
    before = stats.normalize(y).clone()
    update = popart_update_(head.stats, y, [head])
    mu, sigma = update.new_mu, update.new_sigma
    # mu = 0.5·0 + 0.5·[5, 1];  nu = 0.5·1 + 0.5·[26, 2] = [13.5, 1.5]
    s0, s1 = math.sqrt(13.5 - 2.5**2), math.sqrt(1.5 - 0.5**2)
    np.testing.assert_allclose(mu.numpy(), [2.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), [s0, s1], rtol=1e-6)
    expect = np.array([[1.5 / s0, 3.5 / s0], [-0.5 / s1, 1.5 / s1]])
    np.testing.assert_allclose(head.stats.normalize(y).numpy(), expect, rtol=1e-6)
    np.testing.assert_allclose(stats.normalize(y).numpy(), expect, rtol=1e-6)
    # Before the update the same call gave (y − 0)/1: the statistics really moved.
    np.testing.assert_allclose(before.numpy(), y.numpy())
    # Flat layout with task ids gives the same numbers; denormalize inverts.
    tid = torch.tensor([0, 0, 1, 1])
    np.testing.assert_allclose(stats.normalize(y.view(-1), tid).numpy(), expect.reshape(-1),
                               rtol=1e-6)
    np.testing.assert_allclose(stats.normalize_ids(y.view(-1), tid).numpy(),
                               expect.reshape(-1), rtol=1e-6)
    torch.testing.assert_close(stats.denormalize(stats.normalize(y)), y)
    torch.testing.assert_close(stats.denormalize(torch.from_numpy(expect).float().view(-1), tid),
                               y.view(-1))


def test_constant_targets_clamp_sigma_and_stay_finite():
    # Constant 7.7 over 7 samples: mean(y²) − mean(y)² rounds to a small *negative* number in
    # float32; σ must be σ_min, not NaN.
    stats = PopArtStatistics(2)
    head = PopArtHead(4, 2, stats=stats)
    y = torch.tensor([[7.7] * 7, [3.0] * 7])
    h = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    tid = torch.tensor([0, 0, 0, 1, 1, 1])
    before = head.unnormalized(h, tid).detach()
    popart_update_(head.stats, y, [head])
    assert (stats.nu - stats.mu.square()).le(0).all()
    np.testing.assert_allclose(stats.sigma.numpy(), [1e-4, 1e-4], rtol=1e-5)
    n = head.stats.normalize(y)
    assert torch.isfinite(n).all()
    np.testing.assert_allclose(n.numpy(), 0.0, atol=1e-1)  # ≈0: y = μ up to float32 rounding
    assert torch.isfinite(head.weight).all() and torch.isfinite(head.bias).all()
    after = head.unnormalized(h, tid).detach()
    assert torch.isfinite(after).all()
    # σ: 1 → 1e-4 multiplies the weights by 1e4; the outputs hold to float32 precision.
    torch.testing.assert_close(after, before, rtol=1e-3, atol=1e-3)


def test_huge_targets_clamp_sigma_max_and_stay_finite():
    gen = torch.Generator().manual_seed(0)
    stats = PopArtStatistics(2, beta=0.5)
    head = PopArtHead(3, 2, stats=stats).double()
    h = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    tid = torch.tensor([0, 0, 1, 1])
    before = head.unnormalized(h, tid).detach()
    y = torch.tensor([[1e15, 3e15, 2e15, 2e15], [-1e12, 1e12, 0.0, 5e11]], dtype=torch.float64)
    popart_update_(head.stats, y, [head])
    np.testing.assert_allclose(stats.sigma.numpy(), [1e6, 1e6])  # true σ > σ_max: clamped
    np.testing.assert_allclose(stats.mu.numpy(), [2e15, 1.25e11])
    n = head.stats.normalize(y)
    assert torch.isfinite(n).all()
    np.testing.assert_allclose(n[0].numpy(), [-1e9, 1e9, 0.0, 0.0])
    after = head.unnormalized(h, tid).detach()
    assert torch.isfinite(after).all()
    # σ n + μ with |μ| ≈ 2e15 carries an absolute rounding error of ~ε·|μ| (0.25 in float64):
    # preserved to the precision the new statistics can represent, per task.
    tol = 4 * np.finfo(np.float64).eps * stats.mu.abs()[tid].numpy()
    assert (np.abs(after.numpy() - before.numpy()) <= tol).all()
    # float32 statistics with values near 1e18: y² ≈ 1e36 still fits, nothing overflows.
    s32 = PopArtStatistics(1)
    s32.update(torch.tensor([[1e18, 3e18]]))
    assert torch.isfinite(s32.sigma).all() and s32.sigma.item() == pytest.approx(1e6)
    assert torch.isfinite(s32.normalize(torch.tensor([[1e18, 3e18]]))).all()


# ----------------------------------------------------------------------------- preserving outputs


def test_preserve_outputs_by_hand():
    w = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    b = torch.tensor([3.0, -1.0])
    upd = PopArtUpdate(torch.tensor([0.0, 10.0]), torch.tensor([1.0, 2.0]),
                       torch.tensor([1.0, 4.0]), torch.tensor([4.0, 8.0]))
    preserve_outputs_(w, b, *upd)
    # task 0: W·1/4, b = (1·3 + 0 − 1)/4;  task 1: W·2/8, b = (2·(−1) + 10 − 4)/8
    np.testing.assert_allclose(w.numpy(), [[0.25, -0.5], [0.125, 1.0]])
    np.testing.assert_allclose(b.numpy(), [0.5, 0.5])


def test_head_outputs_are_preserved_exactly_in_float64():
    torch.manual_seed(0)
    head = PopArtHead(5, 3, beta=0.3).double()
    h = torch.randn(12, 5, dtype=torch.float64)
    tid = torch.arange(3).repeat_interleave(4)
    before = head.unnormalized(h, tid).detach()
    n_before = head(h, tid).detach()
    for scale, shift in ((1.0, 7.0), (1e3, -50.0), (1e-2, 0.0), (1e4, 1e5)):
        popart_update_(head.stats, scale * torch.randn(3, 8, dtype=torch.float64) + shift, [head])
        after = head.unnormalized(h, tid).detach()
        np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-12, atol=1e-9)
    # ... while the normalized outputs did change (the statistics moved by orders of magnitude).
    assert not torch.allclose(head(h, tid), n_before)


def test_heads_sharing_statistics_are_all_preserved_in_float32():
    torch.manual_seed(1)
    stats = PopArtStatistics(2, beta=0.5)
    q1, q2 = PopArtHead(4, 2, stats=stats), PopArtHead(4, 2, stats=stats)
    # Target copies: deepcopy copies the statistics too, so tie them back.
    q1_t, q2_t = copy.deepcopy(q1), copy.deepcopy(q2)
    with torch.no_grad():
        q1_t.weight.add_(0.1)
        q2_t.bias.sub_(0.3)
    q1_t.stats = q2_t.stats = stats
    assert all(hd.stats is stats for hd in (q1, q2, q1_t, q2_t))
    plain = TaskValueHead(4, 2)  # a head without statistics attribute, read through `stats`
    heads = [q1, q2, q1_t, q2_t]
    h = torch.randn(6, 4)
    tid = torch.tensor([0, 0, 0, 1, 1, 1])

    def outputs() -> list[torch.Tensor]:
        return [hd.unnormalized(h, tid).detach() for hd in heads] + [
            stats.denormalize_ids(plain(h, tid), tid).detach()
        ]

    before = outputs()
    y = torch.tensor([[50.0, 60.0, 70.0], [-1.0, 1.0, 0.5]])
    update = popart_update_(stats, y, [q1, q2, q1_t, q2_t, plain])
    mu, sigma = update.new_mu, update.new_sigma
    # Debiased first step: the batch moments. Variances 200/3 and 0.75 − 1/36 = 26/36.
    np.testing.assert_allclose(mu.numpy(), [60.0, 1 / 6], rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), [math.sqrt(200 / 3), math.sqrt(26) / 6], rtol=1e-5)
    for a, b in zip(outputs(), before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)
    popart_update_(stats, torch.tensor([[500.0, 900.0, 100.0], [0.0, 0.0, 0.1]]), [*heads, plain])
    for a, b in zip(outputs(), before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-4)
    # A head with other statistics cannot be rescaled with these by mistake.
    with pytest.raises(ValueError, match="different statistics"):
        popart_update_(stats, y, [q1, PopArtHead(4, 2)])


def test_rescaling_commutes_with_polyak_averaging():
    # Online and target heads get the same affine map, so lerp-then-rescale == rescale-then-lerp.
    torch.manual_seed(2)
    stats = PopArtStatistics(2, beta=0.5).double()
    online, target = (PopArtHead(3, 2, stats=stats).double() for _ in range(2))
    ref_w = torch.lerp(target.weight.detach(), online.weight.detach(), 0.05)
    ref_b = torch.lerp(target.bias.detach(), online.bias.detach(), 0.05)
    upd = popart_update_(stats, torch.tensor([[3.0, 9.0], [-20.0, 40.0]], dtype=torch.float64),
                         [online, target])
    preserve_outputs_(ref_w, ref_b, *upd)
    with torch.no_grad():
        target.weight.lerp_(online.weight, 0.05)
        target.bias.lerp_(online.bias, 0.05)
    torch.testing.assert_close(target.weight.detach(), ref_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(target.bias.detach(), ref_b, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- gradients, state


def test_head_gradient_reaches_only_the_rows_of_the_sample_tasks():
    head = PopArtHead(3, 4)
    h = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    tid = torch.tensor([2, 2, 0, 2, 0])
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, 4.0])
    (head(h, tid) * c).sum().backward()
    assert head.weight.grad is not None and head.bias.grad is not None
    expect_w = torch.zeros(4, 3)
    expect_w[2] = c[0] * h[0] + c[1] * h[1] + c[3] * h[3]
    expect_w[0] = c[2] * h[2] + c[4] * h[4]
    torch.testing.assert_close(head.weight.grad, expect_w)
    torch.testing.assert_close(head.bias.grad, torch.tensor([4.5, 0.0, 2.0, 0.0]))
    # Task 2's samples alone: rows 0, 1, 3 get exactly zero.
    head.zero_grad()
    head(h[[0, 1, 3]], tid[[0, 1, 3]]).sum().backward()
    assert head.weight.grad is not None and head.bias.grad is not None
    assert torch.count_nonzero(head.weight.grad[[0, 1, 3]]) == 0
    torch.testing.assert_close(head.weight.grad[2], h[[0, 1, 3]].sum(0))
    torch.testing.assert_close(head.bias.grad, torch.tensor([0.0, 0.0, 3.0, 0.0]))
    # The statistics are buffers, not parameters: an optimizer never moves them.
    assert {n for n, _ in head.named_parameters()} == {"weight", "bias"}


def test_state_dict_round_trip():
    head = PopArtHead(3, 2, beta=0.2)
    popart_update_(head.stats, torch.randn(2, 5), [head])
    popart_update_(head.stats, torch.randn(2, 5) * 3 + 10, [head])
    sd = head.state_dict()
    assert {"stats.mu", "stats.nu", "stats.count"} <= set(sd)
    other = PopArtHead(3, 2, beta=0.2)
    other.load_state_dict(sd)
    for name in ("mu", "nu", "count"):
        assert torch.equal(getattr(other.stats, name), getattr(head.stats, name))
    assert other.stats.count.tolist() == [2, 2] and other.stats.count.dtype == torch.long
    h, tid = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    assert torch.equal(other.unnormalized(h, tid), head.unnormalized(h, tid))
    # The third update continues with β_3, as it would have without the round trip.
    y = torch.randn(2, 5)
    popart_update_(head.stats, y, [head])
    popart_update_(other.stats, y, [other])
    assert torch.equal(other.stats.mu, head.stats.mu)
    # Checkpoints written when `count` was a float buffer still load.
    stats = PopArtStatistics(2, beta=0.2)
    stats.load_state_dict({"mu": torch.ones(2), "nu": torch.full((2,), 5.0),
                           "count": torch.tensor([3.0, 3.0])})
    assert stats.count.tolist() == [3, 3]


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
    # ~20 s, in CI on purpose: MT-SAC + PopArt on the toy whose task rewards are scaled
    # ×1 … ×1000 reaches ≥ 0.9 (without PopArt 0.25; see tests/test_learning_slow.py).
    from mtrl.evaluation import evaluate_run
    from mtrl.presets import get_preset
    from mtrl.runner import train

    cfg = get_preset("toy-popart-sac")
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    train(cfg, tmp_path / "r")
    assert evaluate_run(str(tmp_path / "r")).result.success_mean >= 0.9
