"""GradNorm, uncertainty weighting and DWA against hand computations and synthetic problems."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from mtrl.config import CombinerConfig
from mtrl.optim.balancing import DWACombiner, GradNormCombiner, UncertaintyCombiner
from mtrl.optim.combiners import GradientCombiner, make_combiner

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def adam_reference(theta: np.ndarray, grads: list[np.ndarray], lr: float) -> np.ndarray:
    """Adam (Kingma & Ba 2015, Algorithm 1), written out in float64."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = BETA1 * m + (1 - BETA1) * g
        v = BETA2 * v + (1 - BETA2) * g * g
        theta = theta - lr * (m / (1 - BETA1**t)) / (np.sqrt(v / (1 - BETA2**t)) + ADAM_EPS)
    return theta


class Shared(nn.Module):
    """A shared linear trunk; task k's loss is scale[k] · mean((trunk(x_k) − y_k)²)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(3, 1)

    def losses(self, x: torch.Tensor, y: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        num_tasks = scales.shape[0]
        err = (self.trunk(x).squeeze(-1) - y).pow(2).view(num_tasks, -1).mean(1)
        return scales * err


class TaskBias(nn.Module):
    mtrl_task_specific = True

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_tasks))


class Tiny(nn.Module):
    """Two shared linear layers, a shared free parameter (the vmapped per-task path) and a
    task-specific output bias; non-negative per-task losses of a task-stratified batch."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 5)
        self.l2 = nn.Linear(5, 1)
        self.gain = nn.Parameter(torch.tensor(1.3))
        self.head = TaskBias(num_tasks)

    def losses(self, x: torch.Tensor, y: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        num_tasks = scales.shape[0]
        out = self.gain * self.l2(torch.tanh(self.l1(x))).view(num_tasks, -1)
        err = (out + self.head.bias[:, None] - y.view(num_tasks, -1)).pow(2).mean(1)
        return scales * err

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.l1.parameters(), *self.l2.parameters(), self.gain]


def _data(num_tasks: int = 2, per: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tasks * per, 3, generator=g)
    y = torch.randn(num_tasks * per, generator=g)
    return x, y


def _per_task_grad_norms(model: nn.Module, losses_fn, params=None) -> np.ndarray:
    """‖∇ L_k‖ over ``params`` (default: all), one backward per task."""
    params = list(model.parameters()) if params is None else params
    norms = []
    for k in range(len(losses_fn())):
        grads = torch.autograd.grad(losses_fn()[k], params, allow_unused=True)
        norms.append(math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None)))
    return np.array(norms)


def _const_backward(comb: GradientCombiner, losses: list[float]) -> None:
    """One update of ``comb`` with fixed loss values (a dummy parameter takes the gradient)."""
    param = nn.Parameter(torch.zeros(()))
    comb.backward(torch.tensor(losses, dtype=torch.float64) + 0 * param, [param])


# ----------------------------------------------------------------------------- construction
def test_make_combiner_builds_each_with_its_options():
    cfg = CombinerConfig(gradnorm_alpha=0.5, weight_lr=0.01, dwa_temperature=3.0, dwa_window=7,
                         diagnostics_every=11)
    g = make_combiner("gradnorm", cfg)
    assert isinstance(g, GradNormCombiner)
    assert (g.alpha, g.opt.lr, g.diagnostics_every, g.needs_task_grads) == (0.5, 0.01, 11, True)
    u = make_combiner("uncertainty", cfg)
    assert isinstance(u, UncertaintyCombiner) and u.opt.lr == 0.01 and not u.needs_task_grads
    d = make_combiner("dwa", cfg)
    assert isinstance(d, DWACombiner) and (d.temperature, d.window) == (3.0, 7)
    with pytest.raises(ValueError, match="window"):
        DWACombiner(window=0)
    with pytest.raises(ValueError, match="lr"):
        UncertaintyCombiner(lr=0.0)


# ----------------------------------------------------------------------------- GradNorm
def test_gradnorm_two_steps_by_hand():
    """Eq. 2 with the closed-form gradient, Adam, clamp and renormalization, against numpy."""
    lr, alpha = 0.05, 1.5
    w0 = np.array([0.5, 1.2, 1.3])
    l0 = np.array([2.0, 0.5, 8.0])
    steps = [  # (L(t), ‖∇L_k‖)
        (np.array([1.0, 0.45, 2.0]), np.array([3.0, 0.2, 1.0])),
        (np.array([0.8, 0.40, 1.0]), np.array([2.0, 0.3, 1.5])),
    ]
    comb = GradNormCombiner(alpha=alpha, lr=lr)
    comb.loss_weights(torch.zeros(3, dtype=torch.float64))  # creates the per-task state
    comb.w = torch.tensor(w0)
    comb.initial_loss = torch.tensor(l0)

    w = w0.copy()
    m = v = np.zeros(3)
    rng = np.random.default_rng(0)
    for t, (loss, raw_norm) in enumerate(steps, start=1):
        g = w * raw_norm  # G_k = ‖∇(w_k L_k)‖
        # A Gram matrix with that diagonal (off-diagonal entries must not matter).
        dirs = rng.normal(size=(3, 6))
        vecs = g[:, None] * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        comb.after_backward(torch.tensor(loss), torch.tensor(vecs @ vecs.T))

        ratio = loss / l0
        r = ratio / ratio.mean()
        target = g.mean() * r**alpha
        grad = np.sign(g - target) * raw_norm
        m = BETA1 * m + (1 - BETA1) * grad
        v = BETA2 * v + (1 - BETA2) * grad**2
        w = w - lr * (m / (1 - BETA1**t)) / (np.sqrt(v / (1 - BETA2**t)) + ADAM_EPS)
        w = np.maximum(w, 1e-3)
        w = 3 * w / w.sum()
        np.testing.assert_allclose(comb.w.numpy(), w, rtol=1e-12)
        np.testing.assert_allclose(comb.report()["grad_norm"].numpy(), g, rtol=1e-12)
    # Task 1 trains slowest (r_1 > 1) with the smallest gradient: it gains weight; task 0's
    # gradient is above its target: it loses weight.
    assert w[1] > w0[1] and w[0] < w0[0] and comb.opt.t == 2
    assert float(comb.w.sum()) == pytest.approx(3.0, rel=1e-12)


def test_gradnorm_first_update_uses_the_true_gradient_norms():
    torch.manual_seed(0)
    model = Shared()
    comb = GradNormCombiner(alpha=1.5, lr=0.1)
    comb.watch(model)
    x, y = _data()
    scales = torch.tensor([1.0, 100.0])
    norms = _per_task_grad_norms(model, lambda: model.losses(x, y, scales))  # w = 1
    losses = model.losses(x, y, scales)
    l0 = losses.detach().numpy()
    comb.backward(losses, list(model.parameters()))
    np.testing.assert_allclose(comb.report()["grad_norm"].numpy(), norms, rtol=1e-5)
    # First update: L(t) = L(0), so r_k = 1 and the target is mean(G).
    grad_w = np.sign(norms - norms.mean()) * norms
    w = adam_reference(np.ones(2), [grad_w], lr=0.1)  # = 1 ∓ 0.1
    np.testing.assert_allclose(comb.w.numpy(), 2 * w / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(comb.initial_loss.numpy(), l0, rtol=1e-6)


def test_gradnorm_equalizes_gradient_norms():
    torch.manual_seed(0)
    model = Shared()
    comb = GradNormCombiner(alpha=0.0, lr=0.02)  # α = 0: pure gradient-norm equalization
    comb.watch(model)
    x, y = _data()
    scales = torch.tensor([1.0, 100.0])
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    start = _per_task_grad_norms(model, lambda: model.losses(x, y, scales))
    ratios = []
    for _ in range(200):
        opt.zero_grad()
        comb.backward(model.losses(x, y, scales), list(model.parameters()))
        opt.step()
        assert float(comb.w.sum()) == pytest.approx(2.0, rel=1e-5)
        assert float(comb.w.min()) > 0
        g = comb.report()["grad_norm"].numpy()  # G_k = w_k ‖∇L_k‖ of this update
        ratios.append(g.max() / g.min())
    assert start.max() / start.min() > 100 and ratios[0] > 100
    assert max(ratios[-100:]) < 1.6  # from 200× apart to within 1.6× for the last 100
    assert np.median(ratios[-50:]) < 1.25
    g = comb.w.numpy() * _per_task_grad_norms(model, lambda: model.losses(x, y, scales))
    assert g.max() / g.min() < 1.6
    assert comb.w[0] > 50 * comb.w[1]  # the small-loss task is up-weighted


def test_gradnorm_zero_initial_loss_stays_finite():
    comb = GradNormCombiner(alpha=1.5, lr=0.1)
    comb.loss_weights(torch.zeros(2, dtype=torch.float64))
    gram = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    comb.after_backward(torch.tensor([0.0, 1.0], dtype=torch.float64), gram)
    comb.after_backward(torch.tensor([0.5, 1.0], dtype=torch.float64), gram)
    assert torch.isfinite(comb.w).all() and float(comb.w.min()) > 0
    assert float(comb.w.sum()) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- uncertainty
def test_uncertainty_steps_by_hand():
    lr = 0.1
    seq = [[4.0, 0.25, 1.0], [3.0, 0.5, 1.0], [5.0, 0.1, 2.0], [2.0, 0.2, 0.5]]
    comb = UncertaintyCombiner(lr=lr)
    s = np.zeros(3)
    grads = []
    for losses in seq:
        _const_backward(comb, losses)
        grads.append(0.5 - 0.5 * np.exp(-s) * np.array(losses))  # ∂/∂s_k at the current s
        s = adam_reference(np.zeros(3), grads, lr)
        np.testing.assert_allclose(comb.s.numpy(), s, rtol=1e-12, atol=1e-15)
    # First step alone: ∂/∂s = ½ − ½·L = [−1.5, 0.375, 0], Adam moves by −lr·sign.
    first = UncertaintyCombiner(lr=lr)
    _const_backward(first, seq[0])
    np.testing.assert_allclose(first.s.numpy(), [0.1, -0.1, 0.0], atol=1e-7)
    rep = comb.report()
    np.testing.assert_allclose(rep["weight"].numpy(), np.exp(-s), rtol=1e-12)
    np.testing.assert_allclose(rep["sigma"].numpy(), np.exp(s / 2), rtol=1e-12)


def test_uncertainty_converges_to_log_loss():
    comb = make_combiner("uncertainty", CombinerConfig(weight_lr=0.1, diagnostics_every=0))
    for _ in range(600):
        _const_backward(comb, [4.0, 0.25])
    assert isinstance(comb, UncertaintyCombiner)
    np.testing.assert_allclose(comb.s.numpy(), np.log([4.0, 0.25]), atol=0.05)
    np.testing.assert_allclose(comb.report()["weight"].numpy(), [0.25, 4.0], rtol=0.06)


# ----------------------------------------------------------------------------- DWA
def test_dwa_weights_follow_the_paper_formula():
    cfg = CombinerConfig(dwa_temperature=2.0, dwa_window=2, diagnostics_every=0)
    comb = make_combiner("dwa", cfg)
    assert isinstance(comb, DWACombiner)
    seq = [[4.0, 1.0, 2.0], [2.0, 1.0, 2.0],   # window 1: mean [3, 1, 2]
           [3.0, 1.0, 1.0], [3.0, 0.5, 1.0],   # window 2: mean [3, 0.75, 1]
           [1.5, 0.5, 1.0], [1.5, 0.5, 0.0],   # window 3: mean [1.5, 0.5, 0.5]
           [1.0, 1.0, 1.0]]

    def dwa(newer, older):
        r = np.array(newer) / np.array(older)
        e = np.exp(r / 2.0)
        return 3 * e / e.sum()

    used = []
    for losses in seq:
        used.append(comb.loss_weights(torch.tensor(losses, dtype=torch.float64)).clone())
        _const_backward(comb, losses)
        assert float(comb.report()["weight"].sum()) == pytest.approx(3.0, rel=1e-12)
    for lam in used[:4]:  # the first two windows: λ = 1
        np.testing.assert_array_equal(lam.numpy(), np.ones(3))
    window3 = dwa([3, 0.75, 1], [3, 1, 2])  # λ(3) from r(2) = L(2)/L(1)
    np.testing.assert_allclose(used[4].numpy(), window3, rtol=1e-12)
    np.testing.assert_allclose(used[5].numpy(), window3, rtol=1e-12)
    window4 = dwa([1.5, 0.5, 0.5], [3, 0.75, 1])  # λ(4) from r(3) = L(3)/L(2)
    np.testing.assert_allclose(used[6].numpy(), window4, rtol=1e-12)
    assert comb.windows_done == 3 and comb.in_window == 1


# ----------------------------------------------------------------------------- all three
def _nontrivial(name: str) -> GradientCombiner:
    cfg = CombinerConfig(weight_lr=0.05, dwa_window=2, diagnostics_every=0)
    return make_combiner(name, cfg)


@pytest.mark.parametrize("name", ["gradnorm", "uncertainty", "dwa"])
def test_network_gradient_is_that_of_the_weighted_mean(name):
    num_tasks = 3
    torch.manual_seed(1)
    model = Tiny(num_tasks)
    ref = copy.deepcopy(model)  # unwatched copy for the direct computation
    comb = _nontrivial(name)
    comb.watch(model)
    x, y = _data(num_tasks=num_tasks, per=4)
    scales = torch.tensor([1.0, 5.0, 0.2])
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    for _ in range(6):  # move the loss weights away from 1
        opt.zero_grad()
        comb.backward(model.losses(x, y, scales), list(model.parameters()))
        opt.step()
    ref.load_state_dict(model.state_dict())
    lam = comb.loss_weights(ref.losses(x, y, scales)).clone()
    assert (lam - 1).abs().max() > 0.05
    if name != "uncertainty":
        assert float(lam.sum()) == pytest.approx(3.0, rel=1e-5)

    (lam * ref.losses(x, y, scales)).mean().backward()
    opt.zero_grad()
    comb.backward(model.losses(x, y, scales), list(model.parameters()))
    for (pname, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=pname)
    if name == "gradnorm":  # G_k = ‖∇(λ_k L_k)‖ over all shared parameters
        norms = _per_task_grad_norms(ref, lambda: lam * ref.losses(x, y, scales),
                                     ref.shared_parameters())
        np.testing.assert_allclose(comb.report()["grad_norm"].numpy(), norms, rtol=1e-4)


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

    def through_file(state):
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True)

    # A fresh combiner's state (nothing learned yet) round-trips too.
    fresh = make_combiner(name, cfg)
    fresh.load_state_dict(through_file(make_combiner(name, cfg).state_dict()))

    a_model, a = copy.deepcopy(model), make_combiner(name, cfg)
    a.watch(a_model)
    run(a, a_model, 10)
    b_model, b = copy.deepcopy(model), make_combiner(name, cfg)
    b.watch(b_model)
    run(b, b_model, 5)  # mid-window for DWA (window 3)
    state, b_params = b.state_dict(), copy.deepcopy(b_model.state_dict())
    run(b, b_model, 5)  # the state taken above must not change with b
    c_model, c = copy.deepcopy(model), make_combiner(name, cfg)
    c_model.load_state_dict(b_params)
    c.watch(c_model)
    c.load_state_dict(through_file(state))
    run(c, c_model, 5)
    for other_model, other in ((b_model, b), (c_model, c)):
        for p, q in zip(a_model.parameters(), other_model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
        a_state, o_state = a.state_dict(), other.state_dict()
        assert a_state.keys() == o_state.keys() and a_state["steps"] == 10
        for key, value in a.extra_report().items():
            torch.testing.assert_close(value, other.extra_report()[key], rtol=0, atol=0)
    weights = a.extra_report()["weight"]
    assert (weights - 1).abs().max() > 1e-3  # the check above compared learned weights


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
