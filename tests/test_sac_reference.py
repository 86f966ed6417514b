"""MT-SAC against stable-baselines3's SAC, link by link, on identical inputs.

Each test pins one link of the chain between a Meta-World task and a learned policy, so that a
learning gap between mtrl and the reference can be traced to the first link that differs:

* the env: mtrl's one-task Meta-World env and ``gym.make("Meta-World/MT1")`` give the same
  observations, rewards and truncations under the same actions, across episode boundaries;
* the replay: what the training loop stores (warm-up and policy steps, the true last
  observation at a truncation, ``terminated`` 0 at time limits) is what the reference env
  produces for the stored actions;
* the update: from the same weights, batch and noise, mtrl's target, losses, gradients and new
  parameters (critics, actor, temperature, target critics) equal SB3's ``SAC.train`` to float
  precision, over several updates, and the evaluation policies (``tanh(mean)``) act alike.

SB3's squashed Gaussian adds 1e-6 inside ``log(1 − tanh²u)``; mtrl uses the exact identity
(Haarnoja et al. 2018, App. C). The update test removes SB3's guard so that both compute the
same function; ``test_log_prob_guard_matters_only_in_saturation`` bounds what the guard changes.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from mtrl.agents.sac import SACHyperparams, build_mtsac
from mtrl.data.replay import Batch
from mtrl.modules.policies import tanh_gaussian_log_prob

sb3 = pytest.importorskip("stable_baselines3")

TASK = "drawer-close-v3"
OBS, ACT, HIDDEN, BATCH = 39, 4, [64, 64], 64


def test_one_task_env_equals_metaworld_mt1():
    import metaworld  # noqa: F401

    from mtrl.envs.metaworld import make_metaworld_env

    ours = make_metaworld_env("metaworld", [TASK], seed=0)
    ref = gym.make("Meta-World/MT1", env_name=TASK, seed=0)
    try:
        obs, _ = ours.reset(seed=0)
        ref_obs, _ = ref.reset(seed=0)
        assert obs.dtype == np.float32 and obs.shape == (1, OBS)
        np.testing.assert_allclose(obs[0], ref_obs, rtol=0, atol=1e-6)
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(1010):  # two 500-step episodes and a new goal after each
            a = rng.uniform(-1, 1, (1, ACT)).astype(np.float32)
            obs, rew, term, trunc, info = ours.step(a)
            ref_obs, ref_rew, ref_term, ref_trunc, _ = ref.step(a[0])
            np.testing.assert_allclose(info["final_obs"][0], ref_obs, rtol=0, atol=1e-6)
            assert rew[0] == pytest.approx(ref_rew, rel=1e-6, abs=1e-6)
            assert (bool(term[0]), bool(trunc[0])) == (bool(ref_term), bool(ref_trunc))
            if ref_term or ref_trunc:
                ends += 1
                ref_obs, _ = ref.reset()
            np.testing.assert_allclose(obs[0], ref_obs, rtol=0, atol=1e-6)
        assert ends == 2
    finally:
        ours.close()
        ref.close()


def test_replay_holds_the_reference_envs_transitions(tmp_path):
    import metaworld  # noqa: F401

    from mtrl.presets import get_preset
    from mtrl.runner import Trainer

    cfg = get_preset("mt10-mtsac")
    cfg.env.name, cfg.env.tasks = "metaworld", [TASK]
    cfg.agent.actor_hidden = cfg.agent.critic_hidden = [32, 32]
    cfg.agent.batch_size = 32
    cfg.total_steps, cfg.warmup_steps = 560, 520  # crosses a truncation; 40 policy steps
    cfg.eval.every, cfg.eval.final, cfg.checkpoint.every = 0, False, 0
    cfg.log.progress_bar = False
    cfg.device = "cpu"
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    buf = trainer.buffer
    n = int(buf.size[0])
    assert n == 560
    obs, nobs = buf.obs[0, :n].numpy(), buf.next_obs[0, :n].numpy()
    act, rew = buf.action[0, :n].numpy(), buf.reward[0, :n].numpy()
    term = buf.terminated[0, :n].numpy()
    assert not term.any()  # Meta-World's time limit is a truncation: bootstrap through it
    assert np.abs(act).max() <= 1.0
    ref = gym.make("Meta-World/MT1", env_name=TASK, seed=0)
    try:
        o, _ = ref.reset(seed=0)
        for i in range(n):
            np.testing.assert_allclose(obs[i], o, rtol=0, atol=1e-6, err_msg=f"obs {i}")
            o, r, te, tr, _ = ref.step(act[i])
            np.testing.assert_allclose(nobs[i], o, rtol=0, atol=1e-6, err_msg=f"next_obs {i}")
            assert rew[i] == pytest.approx(r, rel=1e-6, abs=1e-6)
            if te or tr:
                assert i == 499  # the stored next_obs above is the episode's last one
                o, _ = ref.reset()
    finally:
        ref.close()


class _ObsSpaceEnv(gym.Env):
    """Spaces only: SB3 builds its networks from them; the test feeds batches directly."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS + 1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS + 1, np.float32), {}

    def step(self, action):
        return np.zeros(OBS + 1, np.float32), 0.0, False, False, {}


def _copy_weights(agent, model) -> None:
    """SB3's weights into mtrl's networks. SB3 sees ``[obs, 1]`` (the one-hot of a single task
    appended to the observation), mtrl ``[obs, one_hot]`` inside its nets: the same input. The
    critics' inputs are ``[obs, 1, a]`` in SB3 and ``[obs, a, one_hot]`` in mtrl."""
    a = model.actor
    with torch.no_grad():
        body = agent.actor.body.net
        body[0].weight.copy_(a.latent_pi[0].weight)
        body[0].bias.copy_(a.latent_pi[0].bias)
        body[2].weight.copy_(a.latent_pi[2].weight)
        body[2].bias.copy_(a.latent_pi[2].bias)
        body[4].weight.copy_(torch.cat([a.mu.weight, a.log_std.weight]))
        body[4].bias.copy_(torch.cat([a.mu.bias, a.log_std.bias]))
        perm = [*range(OBS), *range(OBS + 1, OBS + 1 + ACT), OBS]
        for ours, theirs in ((agent.critic, model.critic), (agent.critic_target,
                                                              model.critic_target)):
            for j, q in enumerate(ours.qs):
                ref = getattr(theirs, f"qf{j}")
                q.net[0].weight.copy_(ref[0].weight[:, perm])
                for k in (0, 2, 4):
                    if k:
                        q.net[k].weight.copy_(ref[k].weight)
                    q.net[k].bias.copy_(ref[k].bias)


def _pairs(agent, model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Corresponding parameters (mtrl, SB3), in mtrl's layout."""
    perm = [*range(OBS), *range(OBS + 1, OBS + 1 + ACT), OBS]
    a, body = model.actor, agent.actor.body.net
    out = {
        "actor.0.weight": (body[0].weight, a.latent_pi[0].weight),
        "actor.0.bias": (body[0].bias, a.latent_pi[0].bias),
        "actor.2.weight": (body[2].weight, a.latent_pi[2].weight),
        "actor.out.weight": (body[4].weight, torch.cat([a.mu.weight, a.log_std.weight])),
        "actor.out.bias": (body[4].bias, torch.cat([a.mu.bias, a.log_std.bias])),
        "log_alpha": (agent.log_alpha, model.log_ent_coef),
    }
    for name, ours, theirs in (("critic", agent.critic, model.critic),
                               ("target", agent.critic_target, model.critic_target)):
        for j, q in enumerate(ours.qs):
            ref = getattr(theirs, f"qf{j}")
            out[f"{name}{j}.0.weight"] = (q.net[0].weight, ref[0].weight[:, perm])
            out[f"{name}{j}.2.weight"] = (q.net[2].weight, ref[2].weight)
            out[f"{name}{j}.4.weight"] = (q.net[4].weight, ref[4].weight)
            out[f"{name}{j}.4.bias"] = (q.net[4].bias, ref[4].bias)
    return out


class _FixedSamples:
    """A replay buffer that always returns the same batch."""

    def __init__(self, samples) -> None:
        self.samples = samples

    def sample(self, batch_size, env=None):
        return self.samples


def test_update_equals_stable_baselines3_sac(monkeypatch):
    """Same weights, batch and noise: mtrl's MT-SAC update is SB3's ``SAC.train`` step."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    torch.manual_seed(0)
    model = SAC("MlpPolicy", _ObsSpaceEnv(), batch_size=BATCH, learning_rate=3e-4,
                gamma=0.99, tau=0.005, ent_coef="auto", target_entropy=-float(ACT),
                policy_kwargs={"net_arch": HIDDEN}, device="cpu", seed=0)
    model.set_logger(configure(None, []))
    # SB3's squashed Gaussian computes log(1 - tanh²u + 1e-6); without the guard it is the
    # same function as mtrl's exact log(1 - tanh²u) (see the log-prob test below).
    model.actor.action_dist.epsilon = 0.0
    agent = build_mtsac(
        obs_dim=OBS, action_dim=ACT, num_tasks=1, actor_hidden=HIDDEN, critic_hidden=HIDDEN,
        actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, init_alpha=1.0,
        hparams=SACHyperparams(gamma=0.99, tau=0.005, target_entropy=-float(ACT)),
    )
    _copy_weights(agent, model)
    for name, (ours, theirs) in _pairs(agent, model).items():
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)

    # Noise: mtrl samples the next-state actions first (target), SB3 the current ones first.
    noise: list[torch.Tensor] = []
    monkeypatch.setattr(torch, "randn_like", lambda t: noise.pop(0))
    normal_rsample = torch.distributions.Normal.rsample
    monkeypatch.setattr(torch.distributions.Normal, "rsample",
                        lambda self, shape=(): self.loc + self.scale * noise.pop(0))
    g = torch.Generator().manual_seed(1)
    for step in range(6):  # update 0 also takes the per-task-gradient (diagnostics) path
        obs = torch.randn(BATCH, OBS, generator=g)
        nobs = obs + 0.1 * torch.randn(BATCH, OBS, generator=g)
        act = torch.rand(BATCH, ACT, generator=g) * 2 - 1
        rew = torch.rand(BATCH, generator=g) * 10
        term = (torch.rand(BATCH, generator=g) < 0.1).float()
        e_now, e_next = torch.randn(BATCH, ACT, generator=g), torch.randn(BATCH, ACT, generator=g)

        noise[:] = [e_next, e_now]
        agent.update(Batch(obs, act, rew, nobs, term, torch.zeros(BATCH, dtype=torch.long), 1))
        assert not noise

        one = torch.ones(BATCH, 1)
        samples = ReplayBufferSamples(torch.cat([obs, one], 1), act, torch.cat([nobs, one], 1),
                                      term[:, None], rew[:, None], None)
        monkeypatch.setattr(model, "replay_buffer", _FixedSamples(samples))
        noise[:] = [e_now, e_next]
        model.train(gradient_steps=1, batch_size=BATCH)
        assert not noise
        for name, (ours, theirs) in _pairs(agent, model).items():
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-6,
                                       msg=lambda m, name=name, step=step: f"{name} after "
                                       f"update {step}: {m}")
    monkeypatch.setattr(torch.distributions.Normal, "rsample", normal_rsample)

    # The evaluation policies: mtrl's deterministic act is SB3's deterministic predict.
    obs = torch.randn(16, OBS, generator=g).numpy()
    ours = agent.act(obs, np.zeros(16, dtype=np.int64), deterministic=True)
    theirs, _ = model.predict(np.concatenate([obs, np.ones((16, 1), np.float32)], 1),
                              deterministic=True)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_log_prob_guard_matters_only_in_saturation():
    """SB3's ``log(1 − tanh²u + 1e-6)`` against mtrl's exact identity: equal to 1e-4 while
    |u| < 3 (|a| < 0.995), and capped at −log(1e-6) ≈ 13.8 per dimension far in saturation,
    where the exact term keeps growing as 2|u| − 2 log 2."""
    mean, log_std = torch.zeros(1, 1), torch.zeros(1, 1)

    def guarded(u):
        return (mean.new_tensor(-0.5 * math.log(2 * math.pi)) - 0.5 * u.pow(2)
                - torch.log(1 - torch.tanh(u).pow(2) + 1e-6)).squeeze(-1)

    moderate = torch.linspace(-3, 3, 61).view(-1, 1)
    exact = tanh_gaussian_log_prob(moderate, mean.expand_as(moderate),
                                   log_std.expand_as(moderate))
    torch.testing.assert_close(exact, guarded(moderate), rtol=0, atol=1e-4)
    far = torch.tensor([[12.0]])
    correction_exact = (tanh_gaussian_log_prob(far, mean, log_std)
                        + 0.5 * far.pow(2).squeeze(-1) + 0.5 * math.log(2 * math.pi))
    assert correction_exact.item() == pytest.approx(2 * 12.0 - 2 * math.log(2), abs=1e-4)
    correction_guarded = guarded(far) + 0.5 * 144.0 + 0.5 * math.log(2 * math.pi)
    assert correction_guarded.item() == pytest.approx(-math.log(1e-6), abs=1e-3)


def test_the_guarded_correction_is_sb3s_formula_when_asked_for():
    """``agent.sac.log_prob_guard=1e-6``: the actor's log-probability is SB3's
    ``log μ(u) − Σ log(1 − tanh²u + 1e-6)``; the default (0) keeps the exact identity, and the
    two differ only far in saturation."""
    from mtrl.modules.policies import TanhGaussianActor

    torch.manual_seed(0)
    exact = TanhGaussianActor(5, 3, 1, [8])
    guarded = TanhGaussianActor(5, 3, 1, [8], log_prob_guard=1e-6)
    guarded.load_state_dict(exact.state_dict())
    obs, tid = torch.randn(64, 5), torch.zeros(64, dtype=torch.long)
    noise = 4.0 * torch.randn(64, 3)  # many samples deep in saturation
    _, lp_exact, u, mean, log_std = exact.rsample(obs, tid, noise=noise)
    _, lp_guarded, u2, _, _ = guarded.rsample(obs, tid, noise=noise)
    torch.testing.assert_close(u, u2, rtol=0, atol=0)
    gauss = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std
             - 0.5 * math.log(2 * math.pi)).sum(-1)
    sb3 = gauss - torch.log(1 - torch.tanh(u).pow(2) + 1e-6).sum(-1)
    torch.testing.assert_close(lp_guarded, sb3, rtol=0, atol=1e-4)
    moderate = (u.abs() < 3).all(-1)
    far = (u.abs() > 10).any(-1)
    assert moderate.any() and far.any()
    torch.testing.assert_close(lp_guarded[moderate], lp_exact[moderate], rtol=0, atol=1e-3)
    assert (lp_exact[far] - lp_guarded[far]).min() > 5.0


def test_log_prob_guard_is_validated():
    from mtrl import config as C
    from mtrl.errors import ConfigError
    from mtrl.presets import get_preset

    cfg = get_preset("toy-mtsac")
    cfg.agent.sac.log_prob_guard = 1e-6
    C.validate(cfg, memory=False)
    cfg.agent.sac.log_prob_guard = -1.0
    with pytest.raises(ConfigError, match=r"agent.sac.log_prob_guard=-1.0 must be in \[0, 1\)"):
        C.validate(cfg, memory=False)
