"""MOORE (Hendawy et al. 2024): Gram-Schmidt by hand, gradient routing, stratified forwards,
use inside MT-SAC, learning the toy, and the presets."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import tiny_toy_config

from mtrl import config as C
from mtrl.agents import build_agent
from mtrl.config import AgentConfig, ArchConfig, CombinerConfig, ConfigError
from mtrl.evaluation import evaluate_run
from mtrl.modules.moore import MooreNet, gram_schmidt
from mtrl.modules.nets import build_net
from mtrl.presets import get_preset
from mtrl.runner import train

T, PER, IN, OUT, K = 3, 4, 5, 2, 3


def _stratified(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T * PER, IN, generator=g), torch.arange(T).repeat_interleave(PER)


def _net(multihead: bool = True, seed: int = 0) -> MooreNet:
    torch.manual_seed(seed)
    return MooreNet(IN, OUT, T, [8, 6], num_experts=K, multihead=multihead)


# ----------------------------------------------------------------------------------------------
# (1) Gram-Schmidt


def test_gram_schmidt_matches_a_hand_computed_3x3_example():
    u = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    # v1 = u1/|u1|; r2 = u2 − <u2,v1>v1 = (1/2, −1/2, 1); r3 = u3 − <u3,v1>v1 − <u3,v2>v2
    # = (−2/3, 2/3, 2/3).
    expect = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2), 0.0],
                           [1 / math.sqrt(6), -1 / math.sqrt(6), 2 / math.sqrt(6)],
                           [-1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)]],
                          dtype=torch.float64)
    torch.testing.assert_close(gram_schmidt(u, eps=0.0), expect, rtol=0, atol=1e-12)
    # The relative guard ε changes independent rows by O(ε²) only.
    torch.testing.assert_close(gram_schmidt(u), expect, rtol=0, atol=1e-7)
    torch.testing.assert_close(gram_schmidt(u.float()), expect.float(), rtol=0, atol=1e-6)


def test_gram_schmidt_rows_are_orthonormal_and_span_the_experts():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(64, 4, 16, generator=g) * 3.0 + 1.0  # 64 states, k = 4 experts, d = 16
    v = gram_schmidt(u)
    eye = torch.eye(4).expand(64, 4, 4)
    torch.testing.assert_close(v @ v.transpose(1, 2), eye, rtol=0, atol=1e-5)
    # Same span, in order: u_i = Σ_{j≤i} r_ij v_j with r lower-triangular, positive diagonal.
    r = u @ v.transpose(1, 2)
    torch.testing.assert_close(r @ v, u, rtol=0, atol=1e-4)
    assert r.triu(1).abs().max() < 1e-4
    assert (r.diagonal(dim1=1, dim2=2) > 0).all()
    # = the QR factorization of Uᵀ with the signs of R's diagonal made positive.
    q, rr = torch.linalg.qr(u.double().transpose(1, 2))
    q = q * torch.sign(rr.diagonal(dim1=1, dim2=2)).unsqueeze(1)
    torch.testing.assert_close(v.double(), q.transpose(1, 2), rtol=0, atol=1e-5)


def test_gram_schmidt_gradient_and_degenerate_experts():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_schmidt, (u,))
    # An expert in the span of the earlier ones, and an all-zero one: rows of length O(ε) and
    # 0, finite gradients. (In float32 the dependent expert leaves a rounding residual of ~1e-7
    # of its length: without the guard that noise would be normalized to a unit row.)
    a = torch.randn(2, 4, generator=g, dtype=torch.float64)
    for dtype, tol in ((torch.float64, 1e-3), (torch.float32, 1e-2)):
        u = torch.stack([a[0], a[1], a[0] - 2.0 * a[1], torch.zeros(4, dtype=torch.float64)])
        u = u.to(dtype).requires_grad_(True)
        v = gram_schmidt(u)
        assert v[2].norm() < tol and v[3].norm() == 0, v
        torch.testing.assert_close(v[:2] @ v[:2].T, torch.eye(2, dtype=dtype))
        (v * torch.randn(v.shape, generator=g, dtype=torch.float64).to(dtype)).sum().backward()
        assert u.grad is not None and torch.isfinite(u.grad).all()
    # Nearly dependent but 2° apart: still normalized to unit length (to 1e-5).
    t = math.radians(2.0)
    u = torch.tensor([[1.0, 0.0, 0.0], [math.cos(t), math.sin(t), 0.0]]) * 5.0
    v = gram_schmidt(u)
    torch.testing.assert_close(v @ v.T, torch.eye(2), rtol=0, atol=1e-5)
    torch.testing.assert_close(v[1], torch.tensor([0.0, 1.0, 0.0]), rtol=0, atol=1e-5)


def test_network_basis_is_orthonormal_per_state():
    net = _net()
    x, _ = _stratified()
    v = net.basis(x)
    assert v.shape == (T * PER, K, 6)
    torch.testing.assert_close(v @ v.transpose(1, 2), torch.eye(K).expand(T * PER, K, K),
                               rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# (2) gradients


@pytest.mark.parametrize("multihead", [True, False])
def test_gradients_reach_every_expert_and_task_weight_and_stay_in_their_task(multihead):
    net = _net(multihead)
    x, tid = _stratified(1)
    g = torch.Generator().manual_seed(2)
    (net(x, tid, PER) * torch.randn(T * PER, OUT, generator=g)).sum().backward()
    for layer in net.experts.layers:
        for p in (layer.weight, layer.bias):
            assert p.grad is not None and torch.isfinite(p.grad).all()
            per_expert = p.grad.reshape(K, -1).abs().sum(1)
            assert (per_expert > 0).all(), per_expert  # through Gram-Schmidt to all k experts
    w = net.task_weights.weight.grad
    assert w is not None and torch.isfinite(w).all() and (w.abs().sum(1) > 0).all()
    # Rows of task 0 only: no gradient reaches the other tasks' weights (or heads).
    net.zero_grad()
    out = net(x, tid, PER)
    (out[tid == 0] * torch.randn(PER, OUT, generator=g)).sum().backward()
    w = net.task_weights.weight.grad
    assert torch.count_nonzero(w[1:]) == 0 and w[0].abs().sum() > 0
    if multihead:
        hw = net.head.weight.grad
        assert torch.count_nonzero(hw[1:]) == 0 and hw[0].abs().sum() > 0


def test_task_weights_and_heads_are_task_specific_for_gradient_combiners():
    from mtrl.optim.task_grads import TaskGradientTracker

    net = _net()
    tracker = TaskGradientTracker()
    tracker.watch(net)
    specific = {id(p) for p in (net.task_weights.weight, net.head.weight, net.head.bias)}
    assert all(tracker.is_task_specific(p) == (id(p) in specific) for p in net.parameters())
    tracker.close()


def test_pcgrad_matches_algorithm_1_with_moore():
    from test_sac_combiners import CheckedPCGrad, _conflicting_batch

    torch.manual_seed(0)
    cfg = AgentConfig(actor_hidden=[6, 5], critic_hidden=[6, 5], batch_size=6,
                      actor_arch="moore", critic_arch="moore", arch=ArchConfig(num_experts=3),
                      combiner=CombinerConfig(diagnostics_every=0))
    agent = build_agent(cfg, obs_dim=2, action_dim=1, num_tasks=2, device=torch.device("cpu"))
    agent.actor_combiner, agent.critic_combiner = CheckedPCGrad(), CheckedPCGrad()
    agent.actor_combiner.watch(agent.actor)
    agent.critic_combiner.watch(agent.critic)
    for seed in range(2):
        agent.update(_conflicting_batch(seed))
    for comb in (agent.actor_combiner, agent.critic_combiner):
        assert comb.checks
        for got, expect in comb.checks:
            np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# (3) stratified and unstratified forwards; report


@pytest.mark.parametrize("multihead", [True, False])
def test_stratified_and_unstratified_forwards_agree(multihead):
    net = _net(multihead)
    x, tid = _stratified(3)
    out = net(x, tid, PER)
    torch.testing.assert_close(out, net(x, tid), rtol=0, atol=1e-6)
    perm = torch.randperm(T * PER, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(x[perm], tid[perm]), out[perm], rtol=0, atol=1e-6)


def test_report_gives_the_task_weights_of_the_last_stratified_forward():
    net = _net()
    x, tid = _stratified()
    assert net.report() == {}
    net(x, tid)  # acting (unstratified) does not record
    assert net.report() == {}
    net(x, tid, PER)
    rep = net.report()
    assert set(rep) == {"experts"} and rep["experts"].shape == (T, K)
    share = rep["experts"]
    assert (share >= 0).all()
    torch.testing.assert_close(share.sum(-1), torch.ones(T))
    # expert_share is the fraction of ‖v_c‖² along each orthonormal direction.
    v = net.basis(x[:1])[0]
    vc = net.task_weights.weight.detach() @ v  # [T, d]
    parts = (net.task_weights.weight.detach().unsqueeze(-1) * v).square().sum(-1)
    torch.testing.assert_close(parts / vc.square().sum(-1, keepdim=True), share)


# ----------------------------------------------------------------------------------------------
# (4) inside MT-SAC, and learning the toy


def test_mtsac_with_moore_updates_reloads_and_reports():
    torch.manual_seed(0)
    cfg = AgentConfig(actor_hidden=[8, 8], critic_hidden=[8, 8], batch_size=8,
                      actor_arch="moore", critic_arch="moore", arch=ArchConfig(num_experts=2))
    agent = build_agent(cfg, obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))
    from mtrl.data.replay import Batch

    g = torch.Generator().manual_seed(1)
    batch = Batch(obs=torch.randn(8, 3, generator=g), action=torch.rand(8, 2, generator=g),
                  reward=torch.randn(8, generator=g), next_obs=torch.randn(8, 3, generator=g),
                  terminated=torch.zeros(8), task_id=torch.arange(2).repeat_interleave(4),
                  num_tasks=2)
    before = [p.clone() for p in agent.actor.parameters()]
    metrics = agent.update(batch)
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters(),
                                                     strict=True))
    reports = agent.architecture_reports()
    assert reports["actor"]["experts"].shape == (2, 2)
    assert reports["critic"]["experts"].shape == (2, 2)
    other = build_agent(cfg, obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))
    other.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    tid = np.array([0, 1, 1, 0, 1])
    np.testing.assert_array_equal(other.act(obs, tid, True), agent.act(obs, tid, True))


def test_mtsac_with_moore_learns_the_four_goal_toy(tmp_path):
    # The 4-goal point-reach toy (toy-mtsac's env): goals in different directions, so the same
    # position needs opposite actions in different tasks. 4 experts of 32-32 units, linear
    # per-task heads, 6000 env steps (1000 of them random warm-up). Measured: success 1.00 on
    # seeds 0-4 (14-22 s each on a busy 2-core machine); 0.0 right after the warm-up.
    cfg = tiny_toy_config(total_steps=6_000, warmup_steps=1_000, agent__batch_size=128,
                          agent__actor_hidden=[32, 32], agent__critic_hidden=[32, 32],
                          agent__actor_arch="moore", agent__critic_arch="moore",
                          checkpoint__every=0, eval__final=True, eval__episodes_per_task=10)
    cfg.agent.arch.num_experts = 4
    train(cfg, tmp_path / "r")
    result = evaluate_run(str(tmp_path / "r")).result
    assert result.success_mean >= 0.9, result.table()


# ----------------------------------------------------------------------------------------------
# (5) presets and validation


@pytest.mark.parametrize(("name", "tasks", "experts", "capacity"),
                         [("mt10-moore", 10, 4, 10_000_000), ("mt50-moore", 50, 6, 5_000_000)])
def test_moore_presets_validate_with_the_papers_sizes(name, tasks, experts, capacity):
    cfg = get_preset(name)
    C.validate(cfg)
    a = cfg.agent
    assert (a.actor_arch, a.critic_arch) == ("moore", "moore")
    assert a.actor_hidden == a.critic_hidden == [400, 400, 400]
    assert a.arch.num_experts == experts and a.arch.moore_multihead
    assert a.batch_size == 128 * tasks
    assert (a.sac.actor_lr, a.sac.critic_lr, a.sac.alpha_lr) == (3e-4, 3e-4, 1e-4)
    assert (a.sac.log_std_min, a.sac.log_std_max, a.gamma, a.sac.tau) == (-10, 2, 0.99, 0.005)
    assert cfg.replay.capacity == capacity
    assert cfg.total_steps == 2_000_000 * tasks and cfg.warmup_steps == 1_500 * tasks
    net = build_net("moore", 39, 8, tasks, a.actor_hidden, a.arch)
    assert isinstance(net, MooreNet) and net.num_experts == experts
    x = torch.randn(2 * tasks, 39)
    assert net(x, torch.arange(tasks).repeat_interleave(2), 2).shape == (2 * tasks, 8)


def test_presets_command_prints_the_resolved_moore_fields(capsys):
    from mtrl.cli import main

    assert main(["presets", "mt10-moore"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# mt10-moore: 10 task(s)")
    assert "actor_arch: moore" in out and "moore_multihead: true" in out
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "mt10-moore" in out and "mt50-moore" in out


def test_config_names_bad_moore_sizes():
    cfg = tiny_toy_config(agent__actor_arch="moore", agent__critic_arch="moore")
    cfg.agent.arch.num_experts = 4
    C.validate(cfg)
    cfg.agent.critic_hidden = [16, 3]
    with pytest.raises(ConfigError, match=r"num_experts=4 .*agent\.critic_hidden=\[16, 3\]"):
        C.validate(cfg)
    with pytest.raises(ValueError, match="orthonormal experts"):
        MooreNet(IN, OUT, T, [16, 3], num_experts=4)
    cfg.agent.critic_hidden = [16]
    C.validate(cfg)
    cfg.agent.popart = True  # the critic becomes a moore body of critic_hidden[:-1] = []
    with pytest.raises(ConfigError, match=r"agent\.critic_hidden=\[16\]: with agent\.popart"):
        C.validate(cfg)
