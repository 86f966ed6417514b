"""PaCo (Sun et al. 2022): θ_τ = Φ w_τ, gradient routing, loss maskout and w-reset, use inside
MT-SAC (checkpoints, learning) and the presets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mtrl.agents import build_agent
from mtrl.config import AgentConfig, ArchConfig, CombinerConfig, ConfigError, validate
from mtrl.data.replay import Batch
from mtrl.modules.nets import build_net
from mtrl.modules.paco import CompositionalVectors, PaCoNet
from mtrl.optim.combiners import PaCoMaskoutCombiner, make_combiner
from mtrl.presets import get_preset

T, PER, IN, OUT, K = 4, 5, 6, 3, 3
HIDDEN = [7, 8]


def _net(seed: int = 0, identical: bool = False) -> PaCoNet:
    torch.manual_seed(seed)
    net = PaCoNet(IN, OUT, T, HIDDEN, num_params=K, identical_init=identical)
    with torch.no_grad():  # non-zero biases, so that the bias composition is checked too
        for layer in net.layers:
            layer.bias.normal_()
    return net


def _stratified(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T * PER, IN, generator=g), torch.arange(T).repeat_interleave(PER)


def _hand_built_mlp(net: PaCoNet, task: int) -> nn.Sequential:
    """An ordinary MLP whose layer weights are Σ_k w_τk W_k (and biases Σ_k w_τk b_k), summed
    here term by term."""
    w = net.w.weight.detach()
    layers: list[nn.Module] = []
    for i, layer in enumerate(net.layers):
        if i:
            layers.append(nn.ReLU())
        lin = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            weight = sum(w[task, k] * layer.weight[k] for k in range(K))  # [in, out]
            bias = sum(w[task, k] * layer.bias[k] for k in range(K))
            lin.weight.copy_(weight.T)
            lin.bias.copy_(bias)
        layers.append(lin)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("identical", [False, True])
def test_each_task_network_is_the_mlp_with_weights_phi_times_w(identical):
    net = _net(0, identical)
    x, tid = _stratified()
    fast = net(x, tid, per_task=PER)
    per_row = net(x, tid)
    torch.testing.assert_close(fast, per_row, rtol=1e-5, atol=1e-5)
    for task in range(T):
        mlp = _hand_built_mlp(net, task)
        rows = tid == task
        torch.testing.assert_close(fast[rows], mlp(x[rows]), rtol=1e-5, atol=1e-5)
        for (weight, bias), lin in zip(net.task_parameters(task), mlp[::2], strict=True):
            torch.testing.assert_close(weight, lin.weight.T, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(bias, lin.bias, rtol=1e-6, atol=1e-6)
    # Arbitrary order (acting): each row uses its own task's network.
    perm = torch.randperm(T * PER, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(net(x[perm], tid[perm]), fast[perm], rtol=1e-5, atol=1e-5)
    if identical:  # the K copies start equal: θ_τ = (Σ_k w_τk) φ_1
        for layer in net.layers:
            torch.testing.assert_close(layer.weight, layer.weight[:1].expand_as(layer.weight))


def test_build_net_and_config_make_a_paco_net():
    net = build_net("paco", IN, OUT, T, HIDDEN, ArchConfig(paco_num_params=4,
                                                            paco_identical_init=False))
    assert isinstance(net, PaCoNet) and net.w.weight.shape == (T, 4)
    assert [tuple(layer.weight.shape) for layer in net.layers] == [(4, IN, 7), (4, 7, 8),
                                                                  (4, 8, OUT)]
    assert net.w.mtrl_task_specific and not getattr(net.layers[0], "mtrl_task_specific", False)
    cfg = get_preset("toy-mtsac")
    cfg.agent.actor_arch = "paco"
    cfg.agent.arch.paco_num_params = 0
    with pytest.raises(ConfigError, match=r"agent\.arch\.paco_num_params=0 must be > 0"):
        validate(cfg)
    cfg.agent.arch.paco_num_params = 2
    cfg.agent.critic_combiner = "paco-maskout"
    cfg.agent.combiner.paco_reset = "average"
    with pytest.raises(ConfigError, match=r"agent\.combiner\.paco_reset='average'.*interpolate"):
        validate(cfg)
    cfg.agent.combiner.paco_reset = "copy"
    cfg.agent.combiner.paco_loss_threshold = -1.0
    with pytest.raises(ConfigError, match=r"paco_loss_threshold=-1\.0 must be > 0"):
        validate(cfg)


def test_phi_gets_gradient_from_every_task_and_w_tau_only_from_its_own():
    net = _net(1)
    x, tid = _stratified(2)
    # Only task 2's rows in the loss: the gradient of Φ's copy k is w_2k times the gradient of
    # task 2's hand-built weights, and only row 2 of W moves, by <W_k, dL/dθ_2>.
    coef = torch.randn(T * PER, OUT, generator=torch.Generator().manual_seed(4))
    rows = tid == 2
    (net(x, tid, PER)[rows] * coef[rows]).sum().backward()
    mlp = _hand_built_mlp(net, 2)
    (mlp(x[rows]) * coef[rows]).sum().backward()
    w = net.w.weight.detach()
    assert net.w.weight.grad is not None
    assert torch.count_nonzero(net.w.weight.grad[[0, 1, 3]]) == 0
    expect_w = torch.zeros(K)
    for layer, lin in zip(net.layers, mlp[::2], strict=True):
        assert lin.weight.grad is not None and lin.bias.grad is not None
        assert layer.weight.grad is not None and layer.bias.grad is not None
        for k in range(K):
            torch.testing.assert_close(layer.weight.grad[k], w[2, k] * lin.weight.grad.T)
            torch.testing.assert_close(layer.bias.grad[k], w[2, k] * lin.bias.grad)
            expect_w[k] += (layer.weight[k].detach() * lin.weight.grad.T).sum()
            expect_w[k] += (layer.bias[k].detach() * lin.bias.grad).sum()
    torch.testing.assert_close(net.w.weight.grad[2], expect_w)

    # All tasks in the loss: Φ's gradient is the sum of every task's contribution.
    net.zero_grad()
    (net(x, tid, PER) * coef).sum().backward()
    grads = {}
    for task in range(T):
        mlp = _hand_built_mlp(net, task)
        (mlp(x[tid == task]) * coef[tid == task]).sum().backward()
        grads[task] = [lin.weight.grad.T for lin in mlp[::2]]
    for i, layer in enumerate(net.layers):
        for k in range(K):
            expect = sum(w[task, k] * grads[task][i] for task in range(T))
            torch.testing.assert_close(layer.weight.grad[k], expect, rtol=1e-5, atol=1e-6)
        per_task = torch.stack([grads[task][i] for task in range(T)])
        assert (per_task.flatten(1).abs().sum(1) > 0).all()  # every task contributed


def _task_losses(net: PaCoNet, x: torch.Tensor, tid: torch.Tensor, scale: torch.Tensor
                 ) -> torch.Tensor:
    return net(x, tid, PER).pow(2).sum(1).view(T, PER).mean(1) * scale


@pytest.mark.parametrize("diagnostics_every", [0, 1])
def test_maskout_drops_the_task_over_epsilon_and_resets_its_w(diagnostics_every):
    """Task 2's loss is pushed over ε by hand: it sends no gradient (Φ's gradient equals the
    reference objective (1/T) Σ_{τ≠2} L_τ), and at the next forward pass its w is a random
    convex combination of the other tasks' w, which stay as they were. With
    ``diagnostics_every=1`` the same gradients come through the per-task gradient path."""
    eps = 50.0
    net, ref = _net(2), _net(2)
    x, tid = _stratified(5)
    scale = torch.tensor([1.0, 1.0, 1e6, 1.0])
    combiner = make_combiner("paco-maskout", CombinerConfig(
        diagnostics_every=diagnostics_every, paco_loss_threshold=eps))
    assert isinstance(combiner, PaCoMaskoutCombiner)
    combiner.watch(net)
    losses = _task_losses(net, x, tid, scale)
    assert losses[2] > eps and (losses[[0, 1, 3]] < eps).all()
    params = list(net.parameters())
    combiner.backward(losses, params)
    ref_losses = _task_losses(ref, x, tid, scale)
    (ref_losses[[0, 1, 3]].sum() / T).backward()
    for p, q in zip(params, ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    assert net.w.weight.grad is not None
    assert torch.count_nonzero(net.w.weight.grad[2]) == 0
    if diagnostics_every:
        assert set(combiner.report()) == {"cosine", "conflict_fraction", "masked"}

    before = net.w.weight.detach().clone()
    assert torch.equal(net.w.weight, before)  # scheduled, not applied yet
    net(x, tid, PER)  # the next forward applies the reset
    after = net.w.weight.detach()
    others = [0, 1, 3]
    torch.testing.assert_close(after[others], before[others], rtol=0, atol=0)
    # w_2 = Σ_j β_j w_j over the other tasks, β ≥ 0 summing to 1 (3 tasks, K = 3: β unique).
    beta = torch.linalg.solve(before[others].T, after[2])
    assert (beta >= -1e-5).all(), beta
    torch.testing.assert_close(beta.sum(), torch.tensor(1.0), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(after[2], before[2])
    torch.testing.assert_close(combiner.report()["masked"], torch.tensor([0.0, 0, 1, 0]))


@pytest.mark.parametrize("reset", ["copy", "none"])
def test_other_reset_methods_and_nan_losses(reset):
    net = _net(3)
    x, tid = _stratified(6)
    combiner = make_combiner("paco-maskout", CombinerConfig(diagnostics_every=0,
                                                            paco_loss_threshold=10.0,
                                                            paco_reset=reset))
    combiner.watch(net)
    losses = _task_losses(net, x, tid, torch.ones(T)) * 0 + torch.tensor(
        [1.0, float("nan"), 2.0, 3.0])
    before = net.w.weight.detach().clone()
    combiner.backward(losses, list(net.parameters()))
    assert net.w.weight.grad is not None and torch.isfinite(net.w.weight.grad).all()
    net(x, tid)
    after = net.w.weight.detach()
    torch.testing.assert_close(after[[0, 2, 3]], before[[0, 2, 3]], rtol=0, atol=0)
    if reset == "none":
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    else:  # the w of one of the other tasks, exactly
        assert any(torch.equal(after[1], before[j]) for j in (0, 2, 3))


def test_no_reset_when_every_task_is_over_epsilon():
    vectors = CompositionalVectors(3, 2)
    before = vectors.weight.detach().clone()
    vectors.schedule_reset(torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(vectors(), before, rtol=0, atol=0)


def _agent(**changes: object):
    cfg = AgentConfig(actor_hidden=[8, 8], critic_hidden=[8, 8], batch_size=8, actor_arch="paco",
                      critic_arch="paco", actor_combiner="paco-maskout",
                      critic_combiner="paco-maskout", arch=ArchConfig(paco_num_params=3))
    for key, value in changes.items():
        setattr(cfg, key, value)
    return build_agent(cfg, obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(obs=torch.randn(8, 3, generator=g), action=torch.rand(8, 2, generator=g),
                 reward=torch.randn(8, generator=g), next_obs=torch.randn(8, 3, generator=g),
                 terminated=torch.zeros(8), task_id=torch.arange(2).repeat_interleave(4),
                 num_tasks=2)


def test_mtsac_with_paco_checkpoint_roundtrip_gives_identical_actions(tmp_path):
    from mtrl.checkpoint import load_file, save_file

    torch.manual_seed(0)
    agent = _agent()
    before = [p.clone() for p in agent.actor.parameters()]
    metrics = agent.update(_batch())
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters(),
                                                     strict=True))
    # A reset scheduled but not applied yet travels with the checkpoint.
    vectors = agent.actor.body.w
    vectors.schedule_reset(torch.tensor([True, False]))
    save_file(copy.deepcopy(agent.state_dict()), tmp_path / "agent.pt")
    other = _agent()
    other.load_state_dict(load_file(tmp_path / "agent.pt"))
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    tid = np.array([0, 1, 1, 0, 1])
    np.testing.assert_array_equal(other.act(obs, tid, True), agent.act(obs, tid, True))
    torch.testing.assert_close(other.actor.body.w.weight, vectors.weight, rtol=0, atol=0)
    torch.testing.assert_close(vectors.weight[0], vectors.weight[1], rtol=0, atol=0)
    # Both continue identically (same torch RNG state).
    torch.manual_seed(7)
    agent.update(_batch())
    torch.manual_seed(7)
    other.update(_batch())
    np.testing.assert_array_equal(other.act(obs, tid, True), agent.act(obs, tid, True))


def test_maskout_inside_mtsac_resets_the_critics_w_of_the_diverged_task():
    """A critic loss over ε for task 1 only (rewards of 1e4 for task 1): after the update,
    each critic member's w_1 is a convex combination of the other task's w (with two tasks:
    a copy of w_0), task 0 kept its own, and the actor (losses under ε) reset nothing."""
    torch.manual_seed(0)
    agent = _agent(critic_combiner="paco-maskout")
    agent.critic_combiner.threshold = 1e3
    batch = _batch()
    batch.reward[4:] = 1e4
    w_actor = agent.actor.body.w.weight.detach().clone()
    agent.update(batch)
    rep = agent.combiner_reports()
    torch.testing.assert_close(rep["critic"]["masked"], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(rep["actor"]["masked"], torch.tensor([0.0, 0.0]))
    agent.act(np.zeros((1, 3), np.float32), np.array([0]), True)  # a forward applies resets
    for q in agent.critic.qs:
        torch.testing.assert_close(q.w.weight[1], q.w.weight[0], rtol=0, atol=0)
    assert not torch.equal(agent.actor.body.w.weight[1], agent.actor.body.w.weight[0])
    assert not torch.equal(agent.actor.body.w.weight, w_actor)  # the actor learned normally


def test_presets_validate_with_the_papers_settings():
    for name, k in (("mt10-paco", 5), ("mt50-paco", 20)):
        cfg = get_preset(name)
        validate(cfg)
        a = cfg.agent
        assert a.actor_arch == a.critic_arch == "paco" and a.arch.paco_num_params == k
        assert a.arch.paco_identical_init
        assert a.actor_hidden == a.critic_hidden == [400, 400, 400]
        assert a.actor_combiner == a.critic_combiner == "paco-maskout"
        assert a.combiner.paco_loss_threshold == 3000.0 and a.combiner.paco_reset == "interpolate"
        assert a.sac.alpha_lr == 1e-4 and (a.sac.log_std_min, a.sac.log_std_max) == (-10, 2)


def test_mtsac_with_paco_learns_the_conflicting_toy_goals(tmp_path):
    """toy-reach's four goals need opposite actions from the same observation, and a PaCo
    network sees only the observation: each task must get its own policy out of Φ through its
    w_τ. A policy that ignores the task solves at most one goal (success 0.25). With K = 2 — four
    task policies in a 2-dimensional parameter subspace — the authors' initialization
    (identical copies, w ~ N(0, I)) and paco-maskout on actor and critic, 12k env steps gave
    success 1.00, 1.00, 1.00, 1.00, 0.75, 0.60 on seeds 0-5 (this test: seed 0); the one-hot
    MLP gets 1.00 on seeds 0-3 after 8k. Larger K learned more slowly on this toy (K = 3:
    0.75-1.00, K = 4: 0.50-0.75 at 12k): with identical copies task τ's network starts as
    (Σ_k w_τk)·φ_1, whose scale spreads with K. The check: at least three goals of four."""
    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    cfg = get_preset("toy-mtsac")
    cfg.device = "cpu"
    cfg.total_steps, cfg.warmup_steps = 12_000, 1_000
    cfg.agent.actor_hidden = cfg.agent.critic_hidden = [32, 32]
    cfg.agent.batch_size = 128
    cfg.agent.actor_arch = cfg.agent.critic_arch = "paco"
    cfg.agent.arch.paco_num_params = 2
    cfg.agent.actor_combiner = cfg.agent.critic_combiner = "paco-maskout"
    cfg.eval.every, cfg.eval.episodes_per_task = 0, 10
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 0
    train(cfg, tmp_path / "run")
    result = evaluate_run(str(tmp_path / "run")).result
    assert result.success_mean >= 0.75, result.table()
