"""Task-conditioned architectures: equations, gradient routing, and use inside MT-SAC."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import tiny_toy_config
from torch import nn

from mtrl.agents import build_agent
from mtrl.config import AgentConfig, ArchConfig, ConfigError, validate
from mtrl.modules.moe import MixtureOfExpertsNet
from mtrl.modules.nets import MultiHeadLinear, MultiHeadNet, build_net
from mtrl.modules.soft_modular import SoftModularNet
from mtrl.modules.task_encoding import EmbeddingTaskEncoder
from mtrl.runner import train

T, PER, IN, OUT = 3, 4, 5, 2


def _stratified(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T * PER, IN, generator=g), torch.arange(T).repeat_interleave(PER)


def test_multihead_stratified_equals_gather_and_heads_get_only_their_task():
    torch.manual_seed(0)
    heads = MultiHeadLinear(T, IN, OUT)
    x, tid = _stratified()
    fast = heads(x, tid, per_task=PER)
    slow = heads(x, tid)
    torch.testing.assert_close(fast, slow)
    expect = torch.stack([x[i] @ heads.weight[tid[i]] + heads.bias[tid[i]]
                          for i in range(len(x))])
    torch.testing.assert_close(fast, expect)
    # Only task 1's rows in the loss: only head 1 moves.
    mask = (tid == 1).float()[:, None]
    (heads(x, tid, per_task=PER) * mask).sum().backward()
    assert heads.weight.grad is not None and heads.bias.grad is not None
    assert torch.count_nonzero(heads.weight.grad[[0, 2]]) == 0
    assert torch.count_nonzero(heads.bias.grad[[0, 2]]) == 0
    torch.testing.assert_close(heads.weight.grad[1], x[tid == 1].sum(0)[:, None].expand(IN, OUT))


def test_multihead_net_trunk_is_shared_heads_are_task_specific():
    net = MultiHeadNet(IN, OUT, T, [8, 8])
    assert net.heads.mtrl_task_specific and not getattr(net.trunk, "mtrl_task_specific", False)
    x, tid = _stratified(1)
    torch.testing.assert_close(net(x, tid, PER), net(x, tid))


def test_embedding_encoder_rows_move_only_with_their_task():
    enc = EmbeddingTaskEncoder(4, 3)
    enc(torch.tensor([2, 2, 0])).sum().backward()
    grad = enc.embedding.weight.grad
    assert grad is not None
    assert torch.count_nonzero(grad[[1, 3]]) == 0
    torch.testing.assert_close(grad[2], torch.full((3,), 2.0))


def test_soft_modular_routing_weights_are_distributions():
    torch.manual_seed(1)
    net = SoftModularNet(IN, OUT, T, num_layers=4, num_modules=3, module_dim=6,
                         embedding_dim=7, routing_dim=5)
    x, tid = _stratified(2)
    _, weights = net.routing(x, tid)
    assert len(weights) == 4
    for w in weights[:-1]:
        assert w.shape == (T * PER, 3, 3)
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(T * PER, 3))
    torch.testing.assert_close(weights[-1].sum(-1), torch.ones(T * PER))
    net(x, tid, per_task=PER)
    rep = net.report()
    assert set(rep) == {"layer1", "layer2", "layer3", "output"}
    torch.testing.assert_close(rep["layer2"][1], weights[1][tid == 1].mean(0))


def test_soft_modular_with_one_module_per_layer_is_an_mlp():
    torch.manual_seed(2)
    net = SoftModularNet(IN, OUT, T, num_layers=3, num_modules=1, module_dim=6,
                         embedding_dim=7, routing_dim=5)
    f1, f2 = net.f[0], net.f[2]
    layers: list[nn.Module] = [copy.deepcopy(f1), nn.ReLU(), copy.deepcopy(f2), nn.ReLU()]
    for mod in net.modules_:
        lin = nn.Linear(mod.in_features, mod.out_features)
        with torch.no_grad():
            lin.weight.copy_(mod.weight[0].T)
            lin.bias.copy_(mod.bias[0, 0])
        layers += [lin, nn.ReLU()]
    layers.append(copy.deepcopy(net.out))
    reference = nn.Sequential(*layers)
    x, tid = _stratified(3)
    torch.testing.assert_close(net(x, tid), reference(x), rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_soft_modular_router():
    torch.manual_seed(3)
    net = SoftModularNet(IN, OUT, T, num_layers=3, num_modules=2, module_dim=6,
                         embedding_dim=7, routing_dim=5)
    x, tid = _stratified(4)
    net(x, tid, PER).pow(2).sum().backward()
    for name in ("h", "w_d", "w_u", "f"):
        grads = [p.grad for p in getattr(net, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


@pytest.mark.parametrize("gating", ["care", "mmoe"])
def test_moe_gates_sum_to_one_and_care_depends_only_on_the_task(gating):
    torch.manual_seed(4)
    net = MixtureOfExpertsNet(IN, OUT, T, [8], num_experts=3, expert_hidden=[6], gating=gating)
    x, tid = _stratified(5)
    alpha = net.expert_weights(x, tid, PER)
    assert (alpha >= 0).all()
    torch.testing.assert_close(alpha.sum(-1), torch.ones(T * PER))
    if gating == "care":
        for k in range(T):
            rows = alpha[tid == k]
            torch.testing.assert_close(rows, rows[:1].expand_as(rows))
    else:
        torch.testing.assert_close(alpha, net.expert_weights(x, tid))
        # Task 0's gate moves only with task 0's samples.
        net.zero_grad()
        (net.expert_weights(x, tid, PER)[tid == 0] * torch.randn(PER, 3)).sum().backward()
        g = net.attention.weight.grad
        assert torch.count_nonzero(g[1:]) == 0 and g[0].abs().sum() > 0
    net(x, tid, PER)
    rep = net.report()["experts"]
    torch.testing.assert_close(rep.sum(-1), torch.ones(T))


ARCHS = ["mlp", "multihead", "soft-modular", "routing", "moe"]


def _tiny_arch() -> ArchConfig:
    return ArchConfig(num_layers=2, num_modules=2, module_dim=8, embedding_dim=8, routing_dim=8,
                      num_experts=2, expert_hidden=[8])


@pytest.mark.parametrize("arch", ARCHS)
def test_mtsac_with_each_architecture_updates_and_reloads(arch):
    torch.manual_seed(0)
    cfg = AgentConfig(actor_hidden=[8, 8], critic_hidden=[8, 8], batch_size=8, actor_arch=arch,
                      critic_arch=arch, arch=_tiny_arch())
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
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters(),
                                                     strict=True))
    other = build_agent(cfg, obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))
    other.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    tid = np.array([0, 1, 1, 0, 1])
    np.testing.assert_array_equal(other.act(obs, tid, True), agent.act(obs, tid, True))


def test_build_net_rejects_unknown_and_config_names_fields():
    with pytest.raises(ValueError,
                       match="allowed: mlp, multihead, separate, soft-modular, routing, moe"):
        build_net("transformer", 3, 1, 2, [4])
    cfg = tiny_toy_config()
    cfg.agent.critic_arch = "routers"
    with pytest.raises(ConfigError, match=r"agent\.critic_arch='routers'.*soft-modular"):
        validate(cfg)
    cfg.agent.critic_arch = "moe"
    cfg.agent.arch.gating = "switch"
    with pytest.raises(ConfigError, match=r"agent\.arch\.gating='switch'.*care, mmoe"):
        validate(cfg)


def test_routing_weights_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_toy_config()
    cfg.agent.actor_arch = "soft-modular"
    cfg.agent.critic_arch = "moe"
    cfg.agent.arch = _tiny_arch()
    train(cfg, tmp_path / "r")
    ea = EventAccumulator(str(tmp_path / "r"), size_guidance={"images": 0})
    ea.Reload()
    assert {"router/actor/layer1", "router/actor/output", "router/critic/experts"} <= set(
        ea.Tags()["images"])
    scalars = set(ea.Tags()["scalars"])
    for k in range(4):
        assert f"router/actor/output_entropy/goal-{k}" in scalars
        assert f"router/critic/experts_entropy/goal-{k}" in scalars
    ent = ea.Scalars("router/critic/experts_entropy/goal-0")[-1].value
    assert 0.0 <= ent <= np.log(2) + 1e-6


def test_routing_picks_valid_modules_and_usage_is_reported():
    from mtrl.modules.routing import RoutingNet

    torch.manual_seed(5)
    net = RoutingNet(IN, OUT, T, depth=3, num_modules=2, module_dim=6)
    x, tid = _stratified(6)
    net(x, tid, PER)
    usage = net.report()
    assert set(usage) == {"depth1", "depth2", "depth3"}
    for u in usage.values():  # [T, modules + PASS], rows are choice frequencies
        assert u.shape == (T, 3)
        torch.testing.assert_close(u.sum(-1), torch.ones(T))
        assert ((u * PER) - (u * PER).round()).abs().max() < 1e-5
    # The chosen route is exactly one module (or PASS) per depth: recompute one row by hand.
    net.eval()
    greedy = net(x[:1], tid[:1])
    h = torch.relu(net.inp(torch.cat([x[:1], torch.eye(T)[tid[:1]]], -1)))
    for d, block in enumerate(net.blocks):
        c = int(net.router.logits[d, tid[0]].argmax())
        h = h if c == 2 else torch.relu(h @ block.weight[c] + block.bias[c])
    torch.testing.assert_close(greedy, net.out(h))


def test_router_policy_gradient_by_hand():
    from mtrl.modules.routing import RoutingNet

    torch.manual_seed(6)
    net = RoutingNet(IN, OUT, T, depth=2, num_modules=2, module_dim=4, allow_pass=False)
    with torch.no_grad():
        net.router.logits.normal_()
    x, tid = _stratified(7)
    per_sample = torch.rand(T * PER)
    net(x, tid, PER)
    choice = net._usage  # [L, B, C]
    loss = net.router_loss(per_sample)
    loss.backward()
    # Reference: −mean_i (r_i − b_task(i)) Σ_d ∂ log π(c_{d,i}) / ∂ logits
    logits = net.router.logits.detach()
    reward = -per_sample
    base = torch.stack([reward[tid == k].mean() for k in range(T)])
    adv = reward - base[tid]
    expect = torch.zeros_like(logits)
    for i in range(T * PER):
        for d in range(2):
            p = torch.softmax(logits[d, tid[i]], -1)
            expect[d, tid[i]] -= adv[i] * (choice[d, i] - p) / (T * PER)
    torch.testing.assert_close(net.router.logits.grad, expect, rtol=1e-5, atol=1e-7)
    assert net.router.mtrl_task_specific


def test_routed_mtsac_updates_its_routers():
    torch.manual_seed(0)
    arch = _tiny_arch()
    arch.router_depth, arch.router_modules, arch.router_diversity = 2, 2, 0.01
    cfg = AgentConfig(actor_hidden=[8], critic_hidden=[8], batch_size=8, actor_arch="routing",
                      critic_arch="routing", arch=arch)
    agent = build_agent(cfg, obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))
    from mtrl.data.replay import Batch

    g = torch.Generator().manual_seed(1)
    batch = Batch(obs=torch.randn(8, 3, generator=g), action=torch.rand(8, 2, generator=g),
                  reward=torch.randn(8, generator=g), next_obs=torch.randn(8, 3, generator=g),
                  terminated=torch.zeros(8), task_id=torch.arange(2).repeat_interleave(4),
                  num_tasks=2)
    routers = [agent.actor.body.router.logits, *(q.router.logits for q in agent.critic.qs)]
    before = [r.clone() for r in routers]
    agent.update(batch)
    for b, r in zip(before, routers, strict=True):
        assert not torch.equal(b, r)  # the policy-gradient (and entropy bonus) moved them
    reports = agent.architecture_reports()
    assert set(reports["actor"]) == {"depth1", "depth2"}
