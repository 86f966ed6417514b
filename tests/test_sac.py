"""MT-SAC equations against values computed by hand (numpy forward passes of the same weights)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from mtrl.agents.sac import MTSAC, SACHyperparams, build_mtsac
from mtrl.data.replay import Batch
from mtrl.modules.mlp import EnsembleLinear
from mtrl.modules.policies import TanhGaussianActor, TwinQCritic, tanh_gaussian_log_prob

OBS, ACT, TASKS, PER_TASK = 2, 1, 2, 3
GAMMA = 0.9
TARGET_ENTROPY = -1.0


def _agent(alpha_optim: str = "adam") -> MTSAC:
    torch.manual_seed(0)
    actor = TanhGaussianActor(OBS, ACT, TASKS, [3])
    critic = TwinQCritic(OBS, ACT, TASKS, [3])
    target = copy.deepcopy(critic)
    with torch.no_grad():  # make the target differ from the online critics
        for p in target.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    log_alpha = torch.nn.Parameter(torch.tensor([math.log(0.5), math.log(2.0)]))
    opt = torch.optim.SGD if alpha_optim == "sgd" else torch.optim.Adam
    return MTSAC(
        actor, critic, target, log_alpha,
        torch.optim.Adam(actor.parameters(), lr=1e-3),
        torch.optim.Adam(critic.parameters(), lr=1e-3),
        opt([log_alpha], lr=1e-2),
        SACHyperparams(gamma=GAMMA, tau=0.05, target_entropy=TARGET_ENTROPY),
    )


def _batch(seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n = TASKS * PER_TASK
    return Batch(
        obs=torch.randn(n, OBS, generator=g),
        action=torch.rand(n, ACT, generator=g) * 2 - 1,
        reward=torch.randn(n, generator=g),
        next_obs=torch.randn(n, OBS, generator=g),
        terminated=torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
        task_id=torch.arange(TASKS).repeat_interleave(PER_TASK),
        num_tasks=TASKS,
    )


EPS = np.array([[0.3], [-1.2], [0.7], [0.0], [1.5], [-0.4]])


@pytest.fixture
def fixed_noise(monkeypatch):
    """Every reparameterized sample uses the noise EPS."""
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.tensor(EPS, dtype=t.dtype).view_as(t))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def np_actor(actor: TanhGaussianActor, obs, task):
    x = np.concatenate([obs, np.eye(TASKS)[task]], 1)
    l1, l2 = actor.body.net[0], actor.body.net[2]
    h = np.maximum(x @ _np(l1.weight).T + _np(l1.bias), 0)
    out = h @ _np(l2.weight).T + _np(l2.bias)
    mean, log_std = out[:, :ACT], np.clip(out[:, ACT:], -20, 2)
    u = mean + np.exp(log_std) * EPS
    # log N(u; mean, std) - log(1 - tanh(u)^2), written directly (no stable identity)
    log_n = -0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    logp = (log_n - np.log(1 - np.tanh(u) ** 2)).sum(1)
    return np.tanh(u), logp


def np_critic(critic: TwinQCritic, obs, act, task):
    x = np.concatenate([obs, act, np.eye(TASKS)[task]], 1)
    qs = []
    for q in critic.qs:
        l1, l2 = q.net[0], q.net[2]
        h = np.maximum(x @ _np(l1.weight).T + _np(l1.bias), 0)
        qs.append((h @ _np(l2.weight).T + _np(l2.bias))[:, 0])
    return np.stack(qs)


def test_soft_q_target_and_critic_loss_by_hand(fixed_noise):
    agent, b = _agent(), _batch()
    task = _np(b.task_id).astype(int)
    alpha = np.array([0.5, 2.0])[task]
    a2, logp2 = np_actor(agent.actor, _np(b.next_obs), task)
    q_next = np_critic(agent.critic_target, _np(b.next_obs), a2, task).min(0)
    y = _np(b.reward) + GAMMA * (1 - _np(b.terminated)) * (q_next - alpha * logp2)
    q = np_critic(agent.critic, _np(b.obs), _np(b.action), task)
    per_sample = 0.5 * ((q - y) ** 2).sum(0)
    expected = per_sample.reshape(TASKS, PER_TASK).mean(1)

    out = agent.losses(b)
    np.testing.assert_allclose(_np(out["target"]), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out["q"]), q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out["critic"]), expected, rtol=1e-5, atol=1e-6)
    # true terminals do not bootstrap
    term = _np(b.terminated) == 1
    np.testing.assert_allclose(_np(out["target"])[term], _np(b.reward)[term], rtol=1e-6)


def test_update_losses_grads_and_target_by_hand(fixed_noise):
    agent, b = _agent(alpha_optim="sgd"), _batch()
    before = copy.deepcopy(agent)
    task = _np(b.task_id).astype(int)
    alpha = np.array([0.5, 2.0])

    # expected critic gradients: autograd of the critic loss alone, on a copy
    ref = copy.deepcopy(agent)
    ref.losses(b)["critic"].mean().backward()
    critic_grads = [p.grad.clone() for p in ref.critic.parameters()]

    m = agent.update(b)

    # critic grads in the agent come from the critic loss only (not from the actor loss)
    for p, g in zip(agent.critic.parameters(), critic_grads, strict=True):
        torch.testing.assert_close(p.grad, g)

    # actor loss, by hand, through the *updated* critic, with the pre-update actor
    a, logp = np_actor(before.actor, _np(b.obs), task)
    q_pi = np_critic(agent.critic, _np(b.obs), a, task).min(0)
    actor_task = (alpha[task] * logp - q_pi).reshape(TASKS, PER_TASK).mean(1)
    assert float(m["actor"]) == pytest.approx(actor_task.mean(), rel=1e-5)

    # temperature: L[k] = -log a_k (mean logp_k + H); SGD moves log a_k by -lr * dL/dlog a_k
    mean_logp = logp.reshape(TASKS, PER_TASK).mean(1)
    grad = -(mean_logp + TARGET_ENTROPY)
    expected_log_alpha = np.log(alpha) - 1e-2 * grad
    np.testing.assert_allclose(_np(agent.log_alpha), expected_log_alpha, rtol=1e-6)
    alpha_losses = -np.log(alpha) * (mean_logp + TARGET_ENTROPY)
    assert float(m["alpha"]) == pytest.approx(alpha_losses.mean(), rel=1e-5)

    # Polyak: target' = (1 - tau) target + tau critic'
    for t0, t1, c1 in zip(before.critic_target.parameters(), agent.critic_target.parameters(),
                          agent.critic.parameters(), strict=True):
        torch.testing.assert_close(t1, 0.95 * t0 + 0.05 * c1)


def test_temperature_of_task_k_moves_only_with_task_k_samples():
    agent = _agent(alpha_optim="sgd")
    b = _batch()
    # batch2 differs from b only in the rows of task 1
    rows1 = b.task_id == 1
    b2 = b._replace(obs=torch.where(rows1[:, None], b.obs + 3.0, b.obs),
                    reward=torch.where(rows1, b.reward - 5.0, b.reward))
    a1, a2 = copy.deepcopy(agent), copy.deepcopy(agent)
    torch.manual_seed(5)
    a1.update(b)
    torch.manual_seed(5)
    a2.update(b2)
    assert a1.log_alpha[0].item() == a2.log_alpha[0].item()
    assert a1.log_alpha[1].item() != a2.log_alpha[1].item()
    # and both moved away from their initial values
    assert a1.log_alpha[0].item() != agent.log_alpha[0].item()


def test_alpha_gradient_is_block_diagonal_in_tasks():
    """d L_alpha[k] / d log_alpha[j] = 0 for j != k, checked with autograd."""
    agent, b = _agent(), _batch()
    _, logp = agent.actor.sample(b.obs, b.task_id)
    mean_logp = logp.detach().view(TASKS, PER_TASK).mean(1)
    losses = -agent.log_alpha * (mean_logp + TARGET_ENTROPY)
    for k in range(TASKS):
        (g,) = torch.autograd.grad(losses[k], agent.log_alpha, retain_graph=True)
        assert torch.count_nonzero(g) == 1 and g[k] != 0


def test_save_load_identical_parameters_and_actions():
    a = build_mtsac(obs_dim=5, action_dim=3, num_tasks=4, actor_hidden=[8], critic_hidden=[8],
                    actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=1.0,
                    hparams=SACHyperparams(target_entropy=-3.0))
    batch = Batch(torch.randn(8, 5), torch.rand(8, 3) * 2 - 1, torch.randn(8), torch.randn(8, 5),
                  torch.zeros(8), torch.arange(4).repeat_interleave(2), 4)
    for _ in range(3):
        a.update(batch)
    b = build_mtsac(obs_dim=5, action_dim=3, num_tasks=4, actor_hidden=[8], critic_hidden=[8],
                    actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=1.0,
                    hparams=SACHyperparams(target_entropy=-3.0))
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for (n1, p1), (n2, p2) in zip(a.actor.state_dict().items(), b.actor.state_dict().items(),
                                  strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    obs = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    tid = np.arange(4)
    np.testing.assert_array_equal(a.act(obs, tid, deterministic=True),
                                  b.act(obs, tid, deterministic=True))
    # and training continues identically (optimizer state restored too)
    torch.manual_seed(3)
    a.update(batch)
    torch.manual_seed(3)
    b.update(batch)
    for p1, p2 in zip(a.critic.parameters(), b.critic.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    mean = torch.randn(64, 3)
    log_std = torch.randn(64, 3).clamp(-2, 1)
    u = mean + log_std.exp() * torch.randn(64, 3)
    d = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean.double(), log_std.exp().double()),
        [torch.distributions.TanhTransform(cache_size=1)],
    )
    a = torch.tanh(u.double())
    expected = d.log_prob(a).sum(-1)
    got = tanh_gaussian_log_prob(u.double(), mean.double(), log_std.double())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # the stable form stays finite where tanh saturates
    big = tanh_gaussian_log_prob(torch.tensor([[30.0]]), torch.tensor([[29.0]]), torch.zeros(1, 1))
    assert torch.isfinite(big).all()


def test_ensemble_linear_equals_separate_layers():
    torch.manual_seed(0)
    layer = EnsembleLinear(3, 5, 4)
    x = torch.randn(7, 5)
    out = layer(x)
    x3 = torch.randn(3, 7, 5)
    out3 = layer(x3)
    for j in range(3):
        torch.testing.assert_close(out[j], x @ layer.weight[j] + layer.bias[j])
        torch.testing.assert_close(out3[j], x3[j] @ layer.weight[j] + layer.bias[j])


def test_one_hot_conditioning_reaches_only_the_task_rows():
    """The actor's first-layer weights for task k's one-hot column get gradient only from
    task k's samples."""
    actor = TanhGaussianActor(OBS, ACT, TASKS, [4])
    obs = torch.randn(6, OBS)
    tid = torch.tensor([0, 0, 0, 1, 1, 1])
    mean, _ = actor(obs, tid)
    (mean[:3].sum()).backward()  # loss from task-0 samples only
    w = actor.body.net[0].weight.grad  # [hidden, obs + tasks]
    assert torch.count_nonzero(w[:, OBS + 1]) == 0  # task-1 column untouched
    assert torch.count_nonzero(w[:, OBS + 0]) > 0
