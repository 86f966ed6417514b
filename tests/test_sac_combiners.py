"""Combiners inside MT-SAC and the runner: equations, logging, determinism, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_toy_config
from test_pcgrad import reference_pcgrad
from test_runner import _assert_same_tensors, _final_state
from test_sac import _agent, _batch

from mtrl.config import CombinerConfig, ConfigError, validate
from mtrl.optim.combiners import PCGradCombiner
from mtrl.optim.pcgrad import random_orders
from mtrl.runner import train


class CheckedPCGrad(PCGradCombiner):
    """Computes Algorithm 1 the slow way (T backward passes, a Python loop) next to the fast
    path and keeps both for comparison."""

    def __init__(self) -> None:
        super().__init__()
        self.checks: list[tuple[np.ndarray, np.ndarray]] = []
        self.conflicts: list[int] = []

    def backward(self, task_losses, params):
        params = [p for p in params if p.requires_grad]
        rows = []
        for k in range(task_losses.shape[0]):
            grads = torch.autograd.grad(task_losses[k], params, retain_graph=True,
                                        allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params, strict=True)]))
        per_task = torch.stack(rows).double().numpy()
        rng = torch.get_rng_state()
        orders = random_orders(task_losses.shape[0]).numpy()
        torch.set_rng_state(rng)  # the fast path draws the same orders
        # Algorithm 1 on the shared parameters; task-specific ones keep their plain gradient.
        shared = np.concatenate([np.full(p.numel(), not self.tracker.is_task_specific(p))
                                 for p in params])
        expect = per_task.sum(0) / task_losses.shape[0]
        expect[shared] = reference_pcgrad(per_task[:, shared], orders).sum(0) / len(per_task)
        gram = per_task[:, shared] @ per_task[:, shared].T
        self.conflicts.append(int((gram[np.triu_indices(len(gram), 1)] < 0).sum()))
        super().backward(task_losses, params)
        got = torch.cat([p.grad.reshape(-1) for p in params]).double().numpy()
        self.checks.append((got, expect))


def _conflicting_batch(seed: int):
    """Both tasks see the same states and actions with opposite rewards: their critic
    gradients on the shared weights point in opposite directions."""
    b = _batch(seed)
    n = b.per_task
    obs = b.obs[:n].repeat(2, 1)
    return b._replace(obs=obs, next_obs=obs, action=b.action[:n].repeat(2, 1),
                      reward=torch.cat([torch.full((n,), 5.0), torch.full((n,), -5.0)]))


def test_pcgrad_gradients_inside_mtsac_match_algorithm_1():
    agent = _agent()
    agent.actor_combiner = CheckedPCGrad()
    agent.critic_combiner = CheckedPCGrad()
    agent.actor_combiner.watch(agent.actor)
    agent.critic_combiner.watch(agent.critic)
    for seed in range(3):
        agent.update(_batch(seed))
        agent.update(_conflicting_batch(seed))
    assert sum(agent.critic_combiner.conflicts) >= 1  # the projection branch was exercised
    for comb in (agent.actor_combiner, agent.critic_combiner):
        assert len(comb.checks) == 6
        for got, expect in comb.checks:
            np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_combiner_state_is_checkpointed():
    agent = _agent()
    agent.update(_batch(0))
    state = agent.state_dict()
    assert state["critic_combiner"]["steps"] == 1
    other = _agent()
    other.load_state_dict(state)
    assert other.critic_combiner.state_dict() == state["critic_combiner"]


def _pcgrad_config(**changes):
    cfg = tiny_toy_config(**changes)
    cfg.agent.actor_combiner = "pcgrad"
    cfg.agent.critic_combiner = "pcgrad"
    cfg.agent.combiner.diagnostics_every = 50
    return cfg


def test_pcgrad_runs_are_deterministic_and_resume_exactly(tmp_path):
    train(_pcgrad_config(), tmp_path / "a")
    train(_pcgrad_config(), tmp_path / "b")
    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    _assert_same_tensors(a["agent"], b["agent"])
    train(_pcgrad_config(total_steps=400), tmp_path / "part")
    train(_pcgrad_config(), tmp_path / "part", resume=True)
    _assert_same_tensors(a["agent"], _final_state(tmp_path / "part")["agent"])


def test_gradient_diagnostics_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_toy_config()  # mean combiner: diagnostics are not PCGrad-only
    cfg.agent.combiner.diagnostics_every = 50
    train(cfg, tmp_path / "r")
    ea = EventAccumulator(str(tmp_path / "r"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    images = ea.Tags()["images"]
    assert set(images) == {"grad/cosine/actor", "grad/cosine/critic"}
    img = ea.Images("grad/cosine/critic")[-1]
    # 4 tasks × 40-pixel cells, with row names on the left, column numbers on top and a
    # colour bar on the right (labeled_heatmap_rgb)
    assert img.height == 14 + 12 + 4 * 40 + 6 and img.width > 4 * 40 + 60
    scalars = set(ea.Tags()["scalars"])
    for net in ("actor", "critic"):
        assert f"grad/conflict_fraction/{net}" in scalars
        for k in range(4):
            assert f"grad/cosine_to_others/{net}/goal-{k}" in scalars
        values = [e.value for e in ea.Scalars(f"grad/conflict_fraction/{net}")]
        assert all(v in (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0) or
                   min(abs(v - f / 6) for f in range(7)) < 1e-6 for v in values)


def test_loss_balancing_combiners_are_refused_for_the_actor():
    cfg = tiny_toy_config()
    cfg.agent.actor_combiner = "gradnorm"
    with pytest.raises(ConfigError, match=r"agent\.actor_combiner='gradnorm'.*non-negative"):
        validate(cfg)
    cfg.agent.actor_combiner = "mean"
    cfg.agent.critic_combiner = "gradnorm"
    validate(cfg)
    cfg.agent.combiner.dwa_window = 0
    with pytest.raises(ConfigError, match=r"agent\.combiner\.dwa_window"):
        validate(cfg)



def test_pcgrad_leaves_popart_heads_to_their_own_task_gradients():
    from mtrl.agents import build_agent
    from mtrl.config import AgentConfig

    torch.manual_seed(0)
    cfg = AgentConfig(actor_hidden=[8], critic_hidden=[8, 8], batch_size=6, popart=True,
                      actor_combiner="pcgrad", critic_combiner="pcgrad")
    agent = build_agent(cfg, obs_dim=2, action_dim=1, num_tasks=2, device=torch.device("cpu"))
    tracker = agent.critic_combiner.tracker
    heads = [p for h in agent.critic.heads for p in h.parameters()]
    assert all(tracker.is_task_specific(p) for p in heads)
    assert not any(tracker.is_task_specific(p) for p in agent.critic.trunks.parameters())
    for seed in range(3):
        metrics = agent.update(_conflicting_batch(seed))
        assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.parametrize("arch", ["soft-modular", "moe", "multihead"])
def test_pcgrad_matches_algorithm_1_with_routed_architectures(arch):
    from mtrl.agents import build_agent
    from mtrl.config import AgentConfig, ArchConfig

    torch.manual_seed(0)
    cfg = AgentConfig(actor_hidden=[6], critic_hidden=[6], batch_size=6, actor_arch=arch,
                      critic_arch=arch,
                      arch=ArchConfig(num_modules=2, module_dim=5, embedding_dim=4, routing_dim=4,
                                      num_experts=2, expert_hidden=[5]),
                      combiner=CombinerConfig(diagnostics_every=0))
    agent = build_agent(cfg, obs_dim=2, action_dim=1, num_tasks=2, device=torch.device("cpu"))
    agent.actor_combiner, agent.critic_combiner = CheckedPCGrad(), CheckedPCGrad()
    agent.actor_combiner.watch(agent.actor)
    agent.critic_combiner.watch(agent.critic)
    for seed in range(2):
        agent.update(_conflicting_batch(seed))
    for comb in (agent.actor_combiner, agent.critic_combiner):
        for got, expect in comb.checks:
            np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-6)


def test_gradient_cosine_image_names_tasks_and_has_a_colour_bar():
    from mtrl.logging import heatmap_rgb, labeled_heatmap_rgb

    m = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.5], [0.0, 0.5, 1.0]])
    img = labeled_heatmap_rgb(m, ["reach-v3", "push-v3", "pick-place-v3"], cell=20)
    raw = heatmap_rgb(m, min_size=60)
    # locate the 60x60 heat map inside the labelled image: its pixels are copied unchanged
    hits = [(y, x) for y in range(img.shape[0] - 59) for x in range(img.shape[1] - 59)
            if np.array_equal(img[y:y + 60, x:x + 60], raw)]
    assert len(hits) == 1
    top, left = hits[0]
    assert left > 60 and top > 5  # room for the names and the column numbers
    names = img[top:top + 60, :left]
    assert (names.min(axis=-1) < 100).sum() > 100  # dark text on white
    # the colour bar right of the map: red at the top, white in the middle, blue at the bottom
    bar = img[top:top + 60, left + 60:]
    red = np.flatnonzero((bar[0] == (255, 0, 0)).all(axis=-1))
    assert len(red) >= 8  # a bar at least 8 px wide
    x = red[0]
    assert tuple(bar[-1, x]) == (0, 0, 255)
    assert bar[30, x].min() > 240
    with pytest.raises(ValueError, match="one label per row"):
        labeled_heatmap_rgb(m, ["a", "b"])
