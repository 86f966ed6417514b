"""GradNorm, uncertainty weighting and DWA against hand computations and synthetic problems."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from mtrl.config import CombinerConfig
from mtrl.optim.balancing import DWACombiner, GradNormCombiner, UncertaintyCombiner
from mtrl.optim.combiners import make_combiner


class Shared(nn.Module):
    """A shared linear trunk; task k's loss is scale[k] · mean((trunk(x_k) − y_k)²)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(3, 1)

    def losses(self, x: torch.Tensor, y: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        num_tasks = scales.shape[0]
        err = (self.trunk(x).squeeze(-1) - y).pow(2).view(num_tasks, -1).mean(1)
        return scales * err


def _data(num_tasks: int = 2, per: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tasks * per, 3, generator=g)
    y = torch.randn(num_tasks * per, generator=g)
    return x, y


def _per_task_grad_norms(model: Shared, x, y, scales) -> np.ndarray:
    norms = []
    for k in range(scales.shape[0]):
        model.zero_grad()
        model.losses(x, y, scales)[k].backward()
        norms.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters())))
    model.zero_grad()
    return np.array(norms)


def test_make_combiner_builds_each_with_its_options():
    cfg = CombinerConfig(gradnorm_alpha=0.5, weight_lr=0.01, dwa_temperature=3.0, dwa_window=7)
    g = make_combiner("gradnorm", cfg)
    assert isinstance(g, GradNormCombiner) and g.alpha == 0.5 and g.opt.lr == 0.01
    u = make_combiner("uncertainty", cfg)
    assert isinstance(u, UncertaintyCombiner) and u.opt.lr == 0.01
    d = make_combiner("dwa", cfg)
    assert isinstance(d, DWACombiner) and d.temperature == 3.0 and d.window == 7
    with pytest.raises(ValueError, match="allowed: mean, pcgrad, gradnorm, uncertainty, dwa"):
        make_combiner("nash", cfg)


def test_gradnorm_one_step_by_hand():
    torch.manual_seed(0)
    model = Shared()
    comb = GradNormCombiner(alpha=1.5, lr=0.1)
    comb.watch(model)
    x, y = _data()
    scales = torch.tensor([1.0, 100.0])
    norms = _per_task_grad_norms(model, x, y, scales)  # ‖∇L_k‖ with w = 1
    losses = model.losses(x, y, scales)
    l0 = losses.detach().numpy()
    comb.backward(losses, list(model.parameters()))
    # First step: L(t) = L(0), so r_k = 1 and the target is mean(G); G_k = ‖∇L_k‖.
    g = norms
    target = g.mean()
    grad_w = np.sign(g - target) * g  # / w, w = 1
    # Adam's first step moves each weight by lr · sign(grad) (m̂/√v̂ = ±1).
    w = 1.0 - 0.1 * grad_w / (np.abs(grad_w) + 1e-8)
    w = np.maximum(w, 1e-3)
    w = w * 2 / w.sum()
    np.testing.assert_allclose(comb.w.numpy(), w, rtol=1e-5)
    np.testing.assert_allclose(comb.initial_loss.numpy(), l0, rtol=1e-6)
    assert float(comb.w.sum()) == pytest.approx(2.0)


def test_gradnorm_equalizes_gradient_norms():
    torch.manual_seed(0)
    model = Shared()
    comb = GradNormCombiner(alpha=0.0, lr=0.05)  # α = 0: pure gradient-norm equalization
    comb.watch(model)
    x, y = _data()
    scales = torch.tensor([1.0, 100.0])
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    start = _per_task_grad_norms(model, x, y, scales)
    ratio0 = start.max() / start.min()
    for _ in range(200):
        opt.zero_grad()
        comb.backward(model.losses(x, y, scales), list(model.parameters()))
        opt.step()
        assert float(comb.w.sum()) == pytest.approx(2.0, rel=1e-5)
    g = comb.w.numpy() * _per_task_grad_norms(model, x, y, scales)
    assert ratio0 > 20
    assert g.max() / g.min() < 2.0  # from ~100× apart to within 2×
    assert comb.w[0] > comb.w[1]  # the small-loss task is up-weighted


def test_gradient_of_the_weighted_objective_reaches_the_network():
    torch.manual_seed(1)
    model = Shared()
    comb = UncertaintyCombiner(lr=0.1)
    comb.watch(model)
    x, y = _data(num_tasks=3, per=4)
    scales = torch.tensor([1.0, 2.0, 3.0])
    for _ in range(3):  # move s away from 0
        model.zero_grad()
        comb.backward(model.losses(x, y, scales), list(model.parameters()))
    lam = torch.exp(-comb.s).clone()
    model.zero_grad()
    (lam * model.losses(x, y, scales)).mean().backward()
    expect = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    comb.backward(model.losses(x, y, scales), list(model.parameters()))
    for p, e in zip(model.parameters(), expect, strict=True):
        torch.testing.assert_close(p.grad, e)


def test_uncertainty_gradient_by_hand_and_convergence():
    comb = UncertaintyCombiner(lr=0.05)
    losses = torch.tensor([4.0, 0.25])
    param = nn.Parameter(torch.zeros(()))
    # One step: ∂/∂s = ½ − ½ e^{−0}·L = [−1.5, 0.375]; Adam's first step is −lr·sign.
    comb.backward(losses + 0 * param, [param])
    np.testing.assert_allclose(comb.s.numpy(), [0.05, -0.05], rtol=1e-5)
    for _ in range(3000):
        comb.backward(losses + 0 * param, [param])
    np.testing.assert_allclose(comb.s.numpy(), np.log([4.0, 0.25]), atol=0.05)
    rep = comb.report()
    np.testing.assert_allclose(rep["weight"].numpy(), [0.25, 4.0], rtol=0.06)


def test_dwa_weights_follow_the_paper_formula():
    comb = DWACombiner(temperature=2.0, window=2)
    param = nn.Parameter(torch.zeros(()))
    seq = [[4.0, 1.0], [2.0, 1.0],   # window 1: mean [3, 1]
           [3.0, 1.0], [3.0, 0.5],   # window 2: mean [3, 0.75]
           [1.5, 0.5], [1.5, 0.5]]   # window 3: mean [1.5, 0.5]
    seen = []
    for losses in seq:
        seen.append(comb.loss_weights(torch.tensor(losses)).clone())
        comb.backward(torch.tensor(losses) + 0 * param, [param])
    for w in seen[:4]:  # first two windows: λ = 1
        torch.testing.assert_close(w, torch.ones(2))
    r = np.array([3 / 3, 0.75 / 1])  # after window 2
    lam = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    np.testing.assert_allclose(seen[4].numpy(), lam, rtol=1e-6)
    np.testing.assert_allclose(seen[5].numpy(), lam, rtol=1e-6)
    r3 = np.array([1.5 / 3, 0.5 / 0.75])
    lam3 = 2 * np.exp(r3 / 2) / np.exp(r3 / 2).sum()
    np.testing.assert_allclose(comb.lam.numpy(), lam3, rtol=1e-6)
    assert float(comb.lam.sum()) == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["gradnorm", "uncertainty", "dwa"])
def test_state_dict_resumes_identically(name):
    cfg = CombinerConfig(dwa_window=3, weight_lr=0.05)
    torch.manual_seed(2)
    model = Shared()
    x, y = _data(num_tasks=2, per=8)
    scales = torch.tensor([1.0, 30.0])

    def run(comb, model, steps):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        for _ in range(steps):
            opt.zero_grad()
            comb.backward(model.losses(x, y, scales), list(model.parameters()))
            opt.step()

    a_model, a = copy.deepcopy(model), make_combiner(name, cfg)
    a.watch(a_model)
    run(a, a_model, 10)
    b_model, b = copy.deepcopy(model), make_combiner(name, cfg)
    b.watch(b_model)
    run(b, b_model, 5)
    state = copy.deepcopy(b.state_dict())
    c_model, c = copy.deepcopy(b_model), make_combiner(name, cfg)
    c.watch(c_model)
    c.load_state_dict(state)
    run(c, c_model, 5)
    for p, q in zip(a_model.parameters(), c_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for key, value in a.extra_report().items():
        torch.testing.assert_close(value, c.extra_report()[key], rtol=0, atol=0)


def test_gradnorm_critic_in_a_training_run(tmp_path):
    from conftest import tiny_toy_config
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mtrl.runner import train

    cfg = tiny_toy_config()
    cfg.agent.critic_combiner = "gradnorm"
    train(cfg, tmp_path / "r")
    ea = EventAccumulator(str(tmp_path / "r"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {f"combiner/critic/weight/goal-{k}" for k in range(4)} <= tags
    final = [ea.Scalars(f"combiner/critic/weight/goal-{k}")[-1].value for k in range(4)]
    assert sum(final) == pytest.approx(4.0, rel=1e-4)
