"""PCGrad and per-task gradients: against straightforward references written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtrl.optim.combiners import MeanCombiner, PCGradCombiner, make_combiner
from mtrl.optim.pcgrad import (
    conflict_fraction,
    cosine_matrix,
    pcgrad_coefficients,
    pcgrad_weights,
    random_orders,
)
from mtrl.optim.task_grads import TaskGradientTracker


def reference_pcgrad(grads: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Algorithm 1 of Yu et al. 2020, literally: a loop over tasks and partners (float64)."""
    out = []
    for i in range(grads.shape[0]):
        g = grads[i].copy()
        for j in orders[i]:
            d = g @ grads[j]
            if d < 0:
                g = g - d / (grads[j] @ grads[j]) * grads[j]
        out.append(g)
    return np.stack(out)


def surgery(grads: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Projected per-task gradients [T, P] through mtrl's coefficient form."""
    gram = grads @ grads.T
    return pcgrad_coefficients(gram, orders) @ grads.double()


@pytest.mark.parametrize("num_tasks", [1, 2, 3, 10, 50])
def test_pcgrad_matches_reference_loop(num_tasks: int) -> None:
    gen = torch.Generator().manual_seed(num_tasks)
    grads = torch.randn(num_tasks, 257, generator=gen, dtype=torch.float64)
    orders = random_orders(num_tasks, generator=gen)
    expect = reference_pcgrad(grads.numpy(), orders.numpy())
    got = surgery(grads, orders).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5 * np.abs(expect).max())
    w = pcgrad_weights(grads @ grads.T, orders)
    np.testing.assert_allclose((w @ grads).numpy(), expect.sum(0), rtol=1e-5, atol=1e-8)


def test_random_orders_are_permutations_of_the_others() -> None:
    orders = random_orders(7, generator=torch.Generator().manual_seed(0))
    assert orders.shape == (7, 6)
    for i, row in enumerate(orders.tolist()):
        assert sorted(row) == [k for k in range(7) if k != i]
    assert random_orders(1).shape == (1, 0)


def test_agreeing_gradients_are_summed_unchanged() -> None:
    base = torch.randn(64, dtype=torch.float64)
    grads = torch.stack([base + 0.1 * torch.randn(64, dtype=torch.float64) for _ in range(5)])
    assert (grads @ grads.T).min() > 0
    orders = random_orders(5)
    assert torch.allclose(surgery(grads, orders), grads)
    ones = torch.ones(5, dtype=torch.float64)
    assert torch.allclose(pcgrad_weights(grads @ grads.T, orders), ones)


def test_opposite_gradients_cancel() -> None:
    g = torch.tensor([[1.0, 2.0, -1.0], [-1.0, -2.0, 1.0]], dtype=torch.float64)
    out = surgery(g, random_orders(2))
    # g_1 projected on the normal plane of g_2 = -g_1 is 0, and vice versa.
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-12)


def test_two_task_projection_by_hand() -> None:
    g1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    out = surgery(torch.stack([g1, g2]), random_orders(2))
    # g1·g2 = -1, |g2|² = 2: g1' = g1 + g2/2 = (0.5, 0.5); |g1|² = 1: g2' = g2 + g1 = (0, 1).
    assert torch.allclose(out, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))


def test_conflicts_removed_against_last_partner() -> None:
    # After Algorithm 1, g_i^PC does not conflict with the last partner it was projected on
    # (projection leaves it orthogonal, later partners may not re-introduce a conflict with it).
    gen = torch.Generator().manual_seed(3)
    grads = torch.randn(6, 40, generator=gen, dtype=torch.float64)
    orders = random_orders(6, generator=gen)
    out = surgery(grads, orders)
    last = orders[:, -1]
    dots = (out * grads[last]).sum(1)
    assert (dots >= -1e-9).all()
    # With two tasks every conflict is gone in both directions.
    g2 = torch.tensor([[1.0, 0.3], [-1.0, 0.2]], dtype=torch.float64)
    o2 = surgery(g2, random_orders(2))
    assert (o2 @ g2.T).min() >= -1e-12


def test_conflict_fraction_and_cosine() -> None:
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    gram = g @ g.T
    assert float(conflict_fraction(gram)) == pytest.approx(1 / 3)
    cos = cosine_matrix(gram)
    assert torch.allclose(cos, torch.tensor([[1.0, 0, -1], [0, 1, 0], [-1, 0, 1]]))
    zero = torch.zeros(2, 2)
    assert torch.equal(cosine_matrix(zero), zero)


# ----------------------------------------------------------------------------- per-task grads


class TwoLayer(nn.Module):
    """A shared trunk, a free (non-linear-layer) parameter and a task-specific head."""

    def __init__(self, num_tasks: int, free_param: bool = False) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 8))
        self.head = Head(num_tasks, 8)
        self.scale = nn.Parameter(torch.tensor(1.3)) if free_param else None

    def forward(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.trunk(x))
        if self.scale is not None:
            h = h * self.scale
        return self.head(h, task_id)


class Head(nn.Module):
    mtrl_task_specific = True

    def __init__(self, num_tasks: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_tasks, dim) * 0.3)

    def forward(self, h: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        return (h * self.weight[task_id]).sum(-1)


def task_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_tasks: int
                ) -> torch.Tensor:
    per = x.shape[0] // num_tasks
    tid = torch.arange(num_tasks).repeat_interleave(per)
    return (model(x, tid) - y).pow(2).view(num_tasks, per).mean(1)


def per_task_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_tasks: int
                       ) -> list[torch.Tensor]:
    """[T, P] gradients by T separate backward passes."""
    rows = []
    for k in range(num_tasks):
        model.zero_grad()
        task_losses(model, x, y, num_tasks)[k].backward()
        rows.append(torch.cat([p.grad.reshape(-1).clone() if p.grad is not None
                               else torch.zeros(p.numel()) for p in model.parameters()]))
    model.zero_grad()
    return rows


@pytest.mark.parametrize("free_param", [False, True])
def test_tracker_per_task_gradients_match_separate_backwards(free_param: bool) -> None:
    torch.manual_seed(0)
    num_tasks, per = 4, 6
    model = TwoLayer(num_tasks, free_param)
    x, y = torch.randn(num_tasks * per, 5), torch.randn(num_tasks * per)
    ref = torch.stack(per_task_reference(model, x, y, num_tasks))
    tracker = TaskGradientTracker()
    tracker.watch(model)
    params = list(model.parameters())
    weights = torch.tensor([1.0, 0.5, 2.0, 0.0])
    with tracker.recording():
        losses = task_losses(model, x, y, num_tasks)
    tg = tracker.compute(losses, params, weights=weights)
    got = dict((id(p), g) for p, g in tg.shared)
    offsets = np.cumsum([0] + [p.numel() for p in params])
    for i, p in enumerate(params):
        cols = ref[:, offsets[i]:offsets[i + 1]]
        if p is model.head.weight:
            assert [id(q) for q, _ in tg.task_specific] == [id(p)]
            expect = (weights[:, None] * cols).sum(0)
            torch.testing.assert_close(tg.task_specific[0][1].reshape(-1), expect)
        else:
            torch.testing.assert_close(got[id(p)].reshape(num_tasks, -1),
                                       weights[:, None] * cols, rtol=1e-5, atol=1e-6)


def test_pcgrad_combiner_matches_reference_on_a_network() -> None:
    torch.manual_seed(1)
    num_tasks, per = 5, 4
    model = TwoLayer(num_tasks, free_param=True)
    x, y = torch.randn(num_tasks * per, 5), torch.randn(num_tasks * per) * 3
    ref = torch.stack(per_task_reference(model, x, y, num_tasks)).double()
    params = list(model.parameters())
    shared = torch.tensor([p is not model.head.weight for p in params])
    sizes = [p.numel() for p in params]
    mask = torch.cat([torch.full((n,), bool(s)) for n, s in zip(sizes, shared, strict=True)])

    comb = PCGradCombiner()
    comb.watch(model)
    state = torch.get_rng_state()
    comb.backward(task_losses(model, x, y, num_tasks), params)
    got = torch.cat([p.grad.reshape(-1) for p in params]).double()
    torch.set_rng_state(state)
    orders = random_orders(num_tasks)  # the same random order the combiner drew
    g_shared = ref[:, mask]
    expect_shared = reference_pcgrad(g_shared.numpy(), orders.numpy()).sum(0) / num_tasks
    np.testing.assert_allclose(got[mask].numpy(), expect_shared, rtol=1e-5, atol=1e-7)
    # The task-specific head keeps its plain gradient: Σ_k ∇L_k / T.
    np.testing.assert_allclose(got[~mask].numpy(), ref[:, ~mask].sum(0).numpy() / num_tasks,
                               rtol=1e-5, atol=1e-7)


def test_mean_combiner_with_and_without_diagnostics_is_the_mean_gradient() -> None:
    torch.manual_seed(2)
    num_tasks, per = 3, 5
    model = TwoLayer(num_tasks)
    x, y = torch.randn(num_tasks * per, 5), torch.randn(num_tasks * per)
    params = list(model.parameters())
    model.zero_grad()
    task_losses(model, x, y, num_tasks).mean().backward()
    expect = [p.grad.clone() for p in params]
    for every in (0, 1):
        comb = MeanCombiner(diagnostics_every=every)
        comb.watch(model)
        model.zero_grad()
        comb.backward(task_losses(model, x, y, num_tasks), params)
        for p, e in zip(params, expect, strict=True):
            torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)
        report = comb.report()
        assert ("cosine" in report) == (every == 1)
        comb.tracker.close()
    ref = torch.stack(per_task_reference(model, x, y, num_tasks))
    ref = ref[:, : sum(p.numel() for p in params if p is not model.head.weight)]
    gram = ref @ ref.T
    torch.testing.assert_close(report["cosine"], cosine_matrix(gram), rtol=1e-4, atol=1e-5)


def test_pcgrad_equals_mean_when_tasks_agree() -> None:
    torch.manual_seed(3)
    num_tasks, per = 3, 8
    model = nn.Sequential(nn.Linear(4, 1))

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
            return self.net(x).squeeze(-1)

    wrap = Wrap()
    x = torch.randn(num_tasks * per, 4)
    y = wrap(x, None).detach() + 5.0  # every task wants the output higher: gradients agree
    params = list(wrap.parameters())
    wrap.zero_grad()
    task_losses(wrap, x, y, num_tasks).mean().backward()
    expect = [p.grad.clone() for p in params]
    wrap.zero_grad()
    comb = make_combiner("pcgrad")
    comb.watch(wrap)
    comb.backward(task_losses(wrap, x, y, num_tasks), params)
    for p, e in zip(params, expect, strict=True):
        torch.testing.assert_close(p.grad, e)


def test_unarmed_tracker_records_nothing_and_no_grad_forward_is_ignored() -> None:
    model = TwoLayer(2)
    tracker = TaskGradientTracker()
    tracker.watch(model)
    model(torch.randn(4, 5), torch.tensor([0, 0, 1, 1]))
    with tracker.recording(), torch.no_grad():
        model(torch.randn(4, 5), torch.tensor([0, 0, 1, 1]))
    assert all(len(r) == 0 for r in tracker._records.values())


class Stacked(nn.Module):
    """Shared stacked (ensemble) layers as soft modularization / experts use them."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        from mtrl.modules.mlp import EnsembleLinear

        self.a = EnsembleLinear(3, 5, 6)  # shared input [B, in]
        self.b = EnsembleLinear(3, 6, 4)  # per-member input [E, B, in]
        self.head = Head(num_tasks, 4)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        h = self.b(torch.tanh(self.a(x))).mean(0)
        return self.head(torch.relu(h), task_id)


def test_tracker_handles_stacked_ensemble_layers_without_the_vmapped_fallback():
    torch.manual_seed(5)
    num_tasks, per = 3, 4
    model = Stacked(num_tasks)
    x, y = torch.randn(num_tasks * per, 5), torch.randn(num_tasks * per)
    ref = torch.stack(per_task_reference(model, x, y, num_tasks))
    tracker = TaskGradientTracker()
    tracker.watch(model)
    assert model.a in tracker._records and model.b in tracker._records
    params = list(model.parameters())
    with tracker.recording():
        losses = task_losses(model, x, y, num_tasks)
    tg = tracker.compute(losses, params)
    got = {id(p): g for p, g in tg.shared}
    offsets = np.cumsum([0] + [p.numel() for p in params])
    for i, p in enumerate(params):
        if p is model.head.weight:
            continue
        torch.testing.assert_close(got[id(p)].reshape(num_tasks, -1),
                                   ref[:, offsets[i]:offsets[i + 1]], rtol=1e-5, atol=1e-6)
