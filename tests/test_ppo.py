"""Multi-task PPO: the clipped objective, value clipping and per-task advantage normalization
against hand-computed values, stratified minibatches, the old log-probabilities stored with the
rollout, runs (seeded, resumed, PopArt on Atari frames) and the toy learning check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtrl import config as C
from mtrl.agents.ppo import MTPPO, PPOHyperparams, build_mtppo
from mtrl.data.rollout import RolloutBatch
from mtrl.presets import get_preset

T, N = 2, 4  # tasks, rows per task


def _agent(discrete: bool = True, popart: bool = False, **hp) -> MTPPO:
    torch.manual_seed(0)
    return build_mtppo(obs_shape=(3,), num_tasks=T, num_actions=3 if discrete else None,
                       action_dim=None if discrete else 2, actor_hidden=[8],
                       critic_hidden=[8], popart=popart, lr=1e-2,
                       hparams=PPOHyperparams(**{"minibatches": 1, "epochs": 1, **hp}))


def _batch(agent: MTPPO, *, shift: float = 0.0) -> RolloutBatch:
    """A rollout batch whose stored log-probabilities are those of the current policy minus
    ``shift`` per row (so that the ratios are exp(shift))."""
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(T * N, 3, generator=g)
    tid = torch.arange(T).repeat_interleave(N)
    with torch.no_grad():
        policy_out, value_out = agent.net(obs, tid)
        action = agent.net.sample(policy_out, tid)
        logp, _ = agent.net.log_prob_entropy(policy_out, action, tid)
    shifts = shift * torch.linspace(-1, 1, T * N)
    returns = torch.randn(T * N, generator=g) * 3
    return RolloutBatch(obs=obs, action=action, value=value_out.clone(), returns=returns,
                        task_id=tid, num_tasks=T, reward=torch.ones(T * N),
                        log_prob=logp - shifts)


def test_clipped_surrogate_against_hand_computed_values():
    eps = 0.2
    agent = _agent(clip_range=eps, normalize_advantage=False, vf_coef=0.5, ent_coef=0.01)
    batch = _batch(agent, shift=0.5)
    adv = batch.returns - batch.value
    idx = torch.arange(T * N)
    out = agent.losses(batch, batch.returns, adv, batch.value, idx)
    with torch.no_grad():
        policy_out, value_out = agent.net(batch.obs, batch.task_id)
        dist = torch.distributions.Categorical(logits=policy_out)
        logp = dist.log_prob(batch.action).numpy()
        ent = dist.entropy().numpy()
    r = np.exp(logp - batch.log_prob.numpy())
    a = adv.numpy()
    expect_pg = -np.minimum(r * a, np.clip(r, 1 - eps, 1 + eps) * a)
    expect_v = (value_out.numpy() - batch.returns.numpy()) ** 2
    np.testing.assert_allclose(out["policy"].detach().numpy(), expect_pg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["value"].detach().numpy(), expect_v, rtol=1e-5, atol=1e-6)
    total = expect_pg + 0.5 * expect_v - 0.01 * ent
    np.testing.assert_allclose(out["per_task"].detach().numpy(),
                               total.reshape(T, N).mean(1), rtol=1e-5, atol=1e-6)
    kl = np.mean((r - 1) - np.log(r))
    assert float(out["approx_kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(out["clip_fraction"]) == pytest.approx(np.mean(np.abs(r - 1) > eps))


def test_clipped_samples_give_the_policy_no_gradient():
    """Where the ratio has left [1 − ε, 1 + ε] in the advantage's direction the surrogate is
    flat: such a sample alone moves no policy parameter."""
    eps = 0.1
    agent = _agent(clip_range=eps, normalize_advantage=False, vf_coef=0.0, ent_coef=0.0)
    batch = _batch(agent)
    # ratio exp(0.5) > 1 + ε with a positive advantage on row 0 only
    log_prob = batch.log_prob.clone()
    log_prob[0] -= 0.5
    batch = batch._replace(log_prob=log_prob)
    adv = torch.zeros(T * N)
    adv[0] = 1.0
    out = agent.losses(batch, batch.returns, adv, batch.value, torch.arange(T * N))
    agent.net.zero_grad()
    out["policy"].sum().backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0
               for p in agent.net.policy.parameters())
    # the same ratio with a negative advantage is not clipped (min picks the unclipped term)
    adv[0] = -1.0
    out = agent.losses(batch, batch.returns, adv, batch.value, torch.arange(T * N))
    agent.net.zero_grad()
    out["policy"].sum().backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0
               for p in agent.net.policy.parameters())


def test_value_clipping_by_hand():
    c = 0.3
    agent = _agent(clip_value=c, vf_coef=1.0)
    batch = _batch(agent)
    old = batch.value - torch.linspace(-1, 1, T * N)  # the value moved by up to ±1 since acting
    out = agent.losses(batch, batch.returns, batch.returns - old, old, torch.arange(T * N))
    with torch.no_grad():
        v = agent.net(batch.obs, batch.task_id)[1].numpy()
    o, g = old.numpy(), batch.returns.numpy()
    clipped = o + np.clip(v - o, -c, c)
    expect = np.maximum((v - g) ** 2, (clipped - g) ** 2)
    np.testing.assert_allclose(out["value"].detach().numpy(), expect, rtol=1e-5, atol=1e-6)


def test_advantages_are_standardized_per_task_within_a_minibatch():
    agent = _agent(normalize_advantage=True, vf_coef=0.0, ent_coef=0.0)
    batch = _batch(agent)  # ratios exactly 1: the policy term is −Â
    adv = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0, 300.0, 500.0, 700.0])
    out = agent.losses(batch, batch.returns, adv, batch.value, torch.arange(T * N))
    a = -out["policy"].detach().view(T, N)
    for k in range(T):
        row = adv.view(T, N)[k]
        expect = (row - row.mean()) / (row.std() + 1e-8)
        torch.testing.assert_close(a[k], expect, rtol=1e-5, atol=1e-5)


def test_minibatches_are_task_stratified_and_cover_every_row():
    agent = _agent(minibatches=2)
    batch = _batch(agent)
    parts = agent.minibatch_indices(batch)
    assert len(parts) == 2
    for idx in parts:
        assert idx.shape == (T * N // 2,)
        tasks = batch.task_id[idx]
        assert torch.equal(tasks, torch.arange(T).repeat_interleave(N // 2))  # task-major
    assert sorted(torch.cat(parts).tolist()) == list(range(T * N))


def test_rollouts_store_the_acting_policys_log_probabilities(tmp_path):
    """The first minibatch of the first epoch sees ratios of exactly 1: the stored
    log-probabilities are those of the policy that acted on those observations."""
    from mtrl.runner import Trainer

    cfg = _tiny_ppo(total_steps=16 * 8)
    trainer = Trainer(cfg, tmp_path / "run")
    path = trainer.path
    trainer.collector.reset(seed=0)
    storage = path.storage
    seen: list[torch.Tensor] = []
    real_update = trainer.agent.update

    def spy(batch: RolloutBatch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            policy_out, _ = trainer.agent.net(batch.obs, batch.task_id)
            logp, _ = trainer.agent.net.log_prob_entropy(policy_out, batch.action,
                                                         batch.task_id)
        seen.append(logp - batch.log_prob)
        return real_update(batch)

    trainer.agent.update = spy
    it = path.iterate(trainer.collector, 0)
    assert it.transitions.num_steps == storage.num_steps
    assert len(seen) == 1 and seen[0].abs().max() < 1e-5
    assert float(it.metrics[0]["epochs"]) == cfg.agent.ppo.epochs
    trainer.close()


def _tiny_ppo(**changes):
    cfg = get_preset("toy-ppo")
    cfg.total_steps = 16 * 8 * 4
    cfg.agent.actor_hidden = cfg.agent.critic_hidden = [16]
    cfg.agent.ppo.n_steps = 8
    cfg.agent.ppo.minibatches = 2
    cfg.agent.ppo.epochs = 2
    cfg.eval.every, cfg.eval.final = 0, False
    cfg.checkpoint.every = 0
    cfg.log.every = 128
    cfg.log.progress_bar = False
    cfg.device = "cpu"
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def _final(run_dir):
    from mtrl.rundir import RunDir

    return RunDir(run_dir).load_checkpoint().state


def test_seeded_ppo_runs_are_identical_and_resume_equals_uninterrupted(tmp_path):
    from mtrl.runner import train

    train(_tiny_ppo(), tmp_path / "a")
    train(_tiny_ppo(), tmp_path / "b")
    train(_tiny_ppo(total_steps=256), tmp_path / "part")
    train(_tiny_ppo(), tmp_path / "part", resume=True)
    a, b, r = (_final(tmp_path / d) for d in ("a", "b", "part"))
    for other in (b, r):
        for k, t in a["agent"]["net"].items():
            assert torch.equal(t, other["agent"]["net"][k]), k
        assert a["loop"] == other["loop"]
    assert a["loop"]["env_steps"] == 512 and a["loop"]["updates"] == 512 // (16 * 8)


def test_ppo_config_errors_name_the_field():
    cfg = get_preset("toy-ppo")
    cfg.agent.ppo.clip_range = 0.0
    with pytest.raises(C.ConfigError, match=r"agent\.ppo\.clip_range=0\.0 must be > 0"):
        C.validate(cfg)
    cfg = get_preset("toy-ppo")
    cfg.agent.ppo.minibatches = 1000
    with pytest.raises(C.ConfigError, match=r"agent\.ppo\.minibatches=1000"):
        C.validate(cfg)
    cfg = get_preset("toy-ppo")
    cfg.warmup_steps = 10
    with pytest.raises(C.ConfigError, match="on-policy"):
        C.validate(cfg)


def test_atari_ppo_popart_runs_on_frames(tmp_path):
    """atari6-ppo-popart on two games, tiny: uint8 frames through the rollout storage,
    per-game PopArt statistics and human-normalized scores logged, PPO metrics logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mtrl.runner import train

    cfg = get_preset("atari6-ppo-popart")
    cfg.env.tasks = ["Pong", "Breakout"]
    cfg.env.envs_per_task = 2
    cfg.env.max_episode_frames = 400
    cfg.agent.ppo.n_steps = 8
    cfg.agent.ppo.minibatches = 2
    cfg.agent.ppo.epochs = 2
    cfg.total_steps = 4 * 8 * 4
    cfg.eval.every, cfg.eval.final = 0, False
    cfg.log.every = 32
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 0
    cfg.device = "cpu"
    res = train(cfg, tmp_path / "run")
    assert res.env_steps == 128 and res.updates == 4
    ea = EventAccumulator(str(tmp_path / "run"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"popart/sigma/Pong", "popart/sigma/Breakout", "loss/clip_fraction",
            "loss/approx_kl", "loss/explained_variance"} <= tags
    sigma = [e.value for e in ea.Scalars("popart/mu/Pong")]
    assert all(math.isfinite(s) for s in sigma)


def test_toy_ppo_learns_and_its_saved_policy_evaluates_the_same(tmp_path):
    """The preset as shipped (160k env steps, ~70 s): >= 0.9 success on seed 0."""
    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    cfg = get_preset("toy-ppo")
    cfg.log.progress_bar = False
    cfg.device = "cpu"
    res = train(cfg, tmp_path / "run")
    assert res.final_eval is not None
    assert res.final_eval.success_mean >= 0.9, res.final_eval.table()
    again = evaluate_run(str(tmp_path / "run"), device="cpu")
    assert again.result.success == res.final_eval.success
