"""Distral (Teh et al. 2017): regularized reward, two-column composition, distillation losses,
gradients, the SAC and A2C agents, evaluation of πi and π0, save → load, learning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mtrl import config as C
from mtrl.agents.a2c import A2CHyperparams, build_mta2c
from mtrl.agents.distral import (
    DistralHyperparams,
    categorical_kl,
    gaussian_kl,
    gaussian_log_prob,
    reward_bonus,
    two_column_logits,
)
from mtrl.agents.sac import SACHyperparams, build_mtsac
from mtrl.data.replay import Batch
from mtrl.data.rollout import RolloutBatch, RolloutStorage
from mtrl.modules.policies import tanh_gaussian_log_prob
from mtrl.presets import get_preset


# ----------------------------------------------------------------------------- equations
def test_hyperparameters_map_to_the_papers_coefficients():
    hp = DistralHyperparams(alpha=0.25, beta=5.0)
    # α = c_KL/(c_KL + c_Ent), β = 1/(c_KL + c_Ent)  ⇒  c_KL = α/β, c_Ent = (1−α)/β
    assert hp.kl_coef == pytest.approx(0.05)
    assert hp.ent_coef == pytest.approx(0.15)
    assert hp.temperature == pytest.approx(hp.kl_coef + hp.ent_coef)
    with pytest.raises(ValueError, match="alpha"):
        DistralHyperparams(alpha=1.5)
    with pytest.raises(ValueError, match="columns"):
        DistralHyperparams(columns=3)


def test_reward_bonus_against_hand_computed_values():
    hp = DistralHyperparams(alpha=0.5, beta=10.0)
    logp_i = torch.tensor([-0.2, -1.0])
    logp_0 = torch.tensor([-0.7, -3.0])
    # r̃ − r = (α/β) log π0 − (1/β) log πi
    expected = [0.05 * -0.7 + 0.1 * 0.2, 0.05 * -3.0 + 0.1 * 1.0]
    torch.testing.assert_close(reward_bonus(logp_i, logp_0, hp), torch.tensor(expected))
    # the objective's form: −c_KL log(πi/π0) − c_Ent log πi
    c_kl, c_ent = hp.kl_coef, hp.ent_coef
    alt = -c_kl * (logp_i - logp_0) - c_ent * logp_i
    torch.testing.assert_close(reward_bonus(logp_i, logp_0, hp), alt)


def test_two_column_policy_is_pi0_to_the_alpha_times_exp_beta_f():
    hp = DistralHyperparams(alpha=0.5, beta=2.0, columns=2)
    h = torch.tensor([[1.0, 0.0, -1.0]])
    f = torch.tensor([[0.0, 0.5, 0.25]])
    logits = two_column_logits(h, f, hp)
    torch.testing.assert_close(logits, torch.tensor([[0.5, 1.0, 0.0]]))
    # π̂i(a) ∝ π̂0(a)^α · exp(β f(a)), π̂0 = softmax(h)
    pi0 = torch.softmax(h, -1)
    unnorm = pi0.pow(0.5) * torch.exp(2.0 * f)
    torch.testing.assert_close(torch.softmax(logits, -1), unnorm / unnorm.sum())


def test_kl_functions_match_torch_distributions_and_vanish_for_equal_policies():
    g = torch.Generator().manual_seed(0)
    lp, lq = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=lp),
                                            torch.distributions.Categorical(logits=lq))
    torch.testing.assert_close(categorical_kl(lp, lq), ref)
    assert categorical_kl(lp, lp).abs().max() < 1e-6
    mp, mq = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    sp, sq = 0.3 * torch.randn(5, 3, generator=g), 0.3 * torch.randn(5, 3, generator=g)
    normal = torch.distributions.Normal
    ref = torch.distributions.kl_divergence(normal(mp, sp.exp()), normal(mq, sq.exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mp, sp, mq, sq), ref)
    assert gaussian_kl(mp, sp, mp, sp).abs().max() < 1e-6
    x = torch.randn(5, 3, generator=g)
    torch.testing.assert_close(gaussian_log_prob(x, mp, sp),
                               normal(mp, sp.exp()).log_prob(x).sum(-1))


# ----------------------------------------------------------------------------- A2C agent
def _a2c(columns: int = 1, *, alpha: float = 0.5, beta: float = 10.0, discrete: bool = True,
         popart: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    return build_mta2c(
        obs_shape=(2,), num_tasks=2, num_actions=3 if discrete else None,
        action_dim=None if discrete else 2, actor_hidden=[8], critic_hidden=[8],
        actor_arch="separate", critic_arch="separate", popart=popart, lr=1e-2,
        hparams=A2CHyperparams(gamma=0.9, ent_coef=0.0, grad_clip=None),
        distral=DistralHyperparams(alpha=alpha, beta=beta, columns=columns),
    )


def _rollout_batch(agent, discrete: bool = True) -> RolloutBatch:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(6, 2, generator=g)
    tid = torch.tensor([0, 0, 0, 1, 1, 1])
    action = (torch.tensor([0, 1, 2, 2, 1, 0]) if discrete
              else torch.randn(6, 2, generator=g))
    value = torch.zeros(6)
    returns = torch.tensor([1.0, 0.5, -0.5, 2.0, 0.0, 1.0])
    return RolloutBatch(obs, action, value, returns, tid, 2)


def test_a2c_step_bonus_equals_formula_with_the_task_policys_log_probs():
    agent = _a2c(columns=2)
    obs = torch.randn(4, 2)
    tid = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(3)
    action, _, bonus = agent.step(obs, tid)
    g, _ = agent.net(obs, tid)  # the task column outputs β f_i
    h = agent.distral.pi0(obs, tid)
    logits_i = 0.5 * h + 10.0 * (g / 10.0)
    lp_i = torch.log_softmax(logits_i, -1).gather(1, action[:, None]).squeeze(1)
    lp_0 = torch.log_softmax(h, -1).gather(1, action[:, None]).squeeze(1)
    torch.testing.assert_close(bonus, 0.05 * lp_0 - 0.1 * lp_i)
    # the same seed gives the same action: it was drawn from the composed task policy
    torch.manual_seed(3)
    u = torch.rand_like(logits_i).clamp_(1e-20, 1.0)
    assert torch.equal(action, (logits_i - torch.log(-torch.log(u))).argmax(-1))


def test_kl_and_bonus_vanish_when_task_policy_equals_pi0():
    # two columns with α = 1 (KL-only) and f = 0: πi = π0 exactly
    agent = _a2c(columns=2, alpha=1.0)
    with torch.no_grad():
        for p in agent.net.policy.parameters():
            p.zero_()
    obs, tid = torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 1])
    _, _, bonus = agent.step(obs, tid)
    assert bonus.abs().max() < 1e-6
    out = agent.losses(_rollout_batch(agent))
    assert out["kl"].abs().max() < 1e-6
    assert out["distill"].abs().max() < 1e-6


def test_a2c_distral_losses_and_their_gradients():
    agent = _a2c(columns=1)
    batch = _rollout_batch(agent)
    out = agent.losses(batch)
    f, v = agent.net(batch.obs, batch.task_id, 3)
    h = agent.distral.pi0(batch.obs, batch.task_id, 3)
    kl = categorical_kl(f, h)
    torch.testing.assert_close(out["kl"], kl)
    torch.testing.assert_close(out["distill"], 0.05 * kl)  # (α/β) KL(πi ‖ π0)
    lp = torch.log_softmax(f, -1).gather(1, batch.action[:, None]).squeeze(1)
    torch.testing.assert_close(out["policy"], -lp * (batch.returns - batch.value))
    expected = (out["policy"] + 0.5 * (v - batch.returns).pow(2) + 0.05 * kl).view(2, 3).mean(1)
    torch.testing.assert_close(out["per_task"], expected)

    pi0_params = list(agent.distral.pi0.parameters())
    task_params = list(agent.net.parameters())
    # the distillation term reaches π0 only ...
    agent.optim.zero_grad()
    out["distill"].sum().backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in task_params)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in pi0_params)
    # ... and with one column the policy gradient reaches the task policies only
    agent.optim.zero_grad()
    out["policy"].sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in pi0_params)
    # with two columns the task policies' policy gradient also reaches h (π0's logits)
    agent2 = _a2c(columns=2)
    out2 = agent2.losses(_rollout_batch(agent2))
    out2["policy"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0
               for p in agent2.distral.pi0.parameters())


def test_gaussian_a2c_distral_kl_is_the_closed_form():
    agent = _a2c(discrete=False)
    batch = _rollout_batch(agent, discrete=False)
    out = agent.losses(batch)
    mean_i, _ = agent.net(batch.obs, batch.task_id, 3)
    mean0, log_std0 = agent.distral.pi0(batch.obs, batch.task_id, 3)
    log_std_i = agent.net.log_std(batch.task_id)
    torch.testing.assert_close(out["kl"], gaussian_kl(mean_i, log_std_i, mean0, log_std0))


def test_rollout_bonus_enters_the_returns():
    st = RolloutStorage(2, np.array([0, 1]), (1,), discrete=True)
    st.start(np.zeros((2, 1), np.float32))
    for t in range(2):
        st.add(torch.zeros(2, dtype=torch.long), torch.zeros(2), np.array([1.0, 2.0]),
               np.zeros(2, bool), np.zeros(2, bool), np.zeros((2, 1), np.float32),
               bonus=torch.tensor([0.5, -1.0]) * (t + 1))
    b = st.batch(torch.zeros(2), gamma=0.5, lam=1.0)
    # env 0: r̃ = 1.5, 2.0 → G = (1.5 + .5·2, 2); env 1: r̃ = 1, 0 → G = (1, 0)
    torch.testing.assert_close(b.returns, torch.tensor([2.5, 2.0, 1.0, 0.0]))


# ----------------------------------------------------------------------------- SAC agent
def _sac(tune_entropy: bool = True):
    torch.manual_seed(0)
    return build_mtsac(
        obs_dim=3, action_dim=2, num_tasks=2, actor_hidden=[8], critic_hidden=[8],
        actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.2,
        hparams=SACHyperparams(gamma=0.9, target_entropy=-2.0), actor_arch="separate",
        critic_arch="separate",
        distral=DistralHyperparams(alpha=0.5, beta=10.0), tune_entropy=tune_entropy,
    )


def _sac_batch() -> Batch:
    g = torch.Generator().manual_seed(2)
    return Batch(torch.randn(6, 3, generator=g), torch.rand(6, 2, generator=g) * 2 - 1,
                 torch.randn(6, generator=g), torch.randn(6, 3, generator=g),
                 torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
                 torch.tensor([0, 0, 0, 1, 1, 1]), 2)


@pytest.mark.parametrize("tune", [True, False])
def test_sac_distral_target_against_the_regularized_soft_value(tune):
    agent = _sac(tune_entropy=tune)
    batch = _sac_batch()
    torch.manual_seed(5)
    y = agent.losses(batch)["target"]
    torch.manual_seed(5)
    with torch.no_grad():
        a, logp_i, u, _, _ = agent.actor.rsample(batch.next_obs, batch.task_id, 3)
        q = agent.critic_target(batch.next_obs, a, batch.task_id, 3).min(0).values
        mean0, log_std0 = agent.distral.pi0(batch.next_obs, batch.task_id)
        logp_0 = tanh_gaussian_log_prob(u, mean0, log_std0)
    c_kl = 0.05
    c_ent = torch.full((6,), 0.2) if tune else torch.full((6,), 0.05)  # α_k or (1 − α)/β
    soft_v = q - (c_ent + c_kl) * logp_i + c_kl * logp_0
    expected = batch.reward + 0.9 * (1 - batch.terminated) * soft_v
    torch.testing.assert_close(y, expected)


def test_sac_distral_update_trains_pi0_only_by_distillation_and_keeps_fixed_entropy():
    agent = _sac(tune_entropy=False)
    calls = {"n": 0}
    for p in agent.distral.pi0.parameters():
        p.register_hook(lambda g: calls.__setitem__("n", calls["n"] + 1) or g)
    log_alpha = agent.log_alpha.detach().clone()
    before = {k: v.clone() for k, v in agent.distral.pi0.state_dict().items()}
    m = agent.update(_sac_batch())
    n_params = len(list(agent.distral.pi0.parameters()))
    assert calls["n"] == n_params  # one backward reaches π0: its distillation loss
    assert torch.equal(agent.log_alpha, log_alpha)  # fixed c_Ent: temperatures not learned
    assert any(not torch.equal(v, agent.distral.pi0.state_dict()[k]) for k, v in before.items())
    assert float(m["distral_kl"]) >= 0.0
    tm = agent.task_metrics()
    torch.testing.assert_close(tm["alpha"], torch.full((2,), 0.05))
    assert tm["distral/kl"].shape == (2,)


def test_pi0_acts_with_pi0_and_task_policies_with_their_own_networks():
    agent = _sac()
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    tid = np.array([0, 1, 0, 1])
    a0 = agent.act_pi0(obs, tid, deterministic=True)
    with torch.no_grad():
        mean0, _ = agent.distral.pi0(torch.as_tensor(obs), torch.as_tensor(tid))
        mean_i, _ = agent.actor(torch.as_tensor(obs), torch.as_tensor(tid))
    np.testing.assert_allclose(a0, torch.tanh(mean0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(agent.act(obs, tid, deterministic=True),
                               torch.tanh(mean_i).numpy(), rtol=1e-6)
    assert not np.allclose(a0, agent.act(obs, tid, deterministic=True))


# ----------------------------------------------------------------------------- config
def test_distral_config_errors_name_the_field():
    cfg = get_preset("toy-distral-sac")
    cfg.agent.distral.columns = 2
    with pytest.raises(C.ConfigError, match=r"agent.distral.columns=2.*allowed here: 1"):
        C.validate(cfg)
    cfg = get_preset("toy-distral")
    cfg.agent.distral.alpha = 1.5
    with pytest.raises(C.ConfigError, match=r"agent.distral.alpha=1.5"):
        C.validate(cfg)
    cfg = get_preset("toy-distral")
    cfg.agent.name = "distral-sac"
    cfg.warmup_steps = 100
    with pytest.raises(C.ConfigError, match=r"discrete actions.*distral-a2c"):
        C.validate(cfg)


# ----------------------------------------------------------------------------- runs
def _tiny(preset: str, **changes):
    cfg = get_preset(preset)
    cfg.agent.actor_hidden = [16]
    cfg.agent.critic_hidden = [16]
    cfg.eval.every = 0
    cfg.eval.final = True
    cfg.eval.episodes_per_task = 2
    cfg.log.every = 160
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 0
    cfg.device = "cpu"
    if preset == "toy-distral-sac":
        cfg.total_steps, cfg.warmup_steps, cfg.agent.batch_size = 400, 200, 32
        cfg.replay.capacity = 2_000
    else:
        cfg.total_steps = 640
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("preset", ["toy-distral", "toy-distral-sac"])
def test_runs_evaluate_task_policies_and_pi0_separately(tmp_path, preset, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mtrl.cli import main
    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    res = train(_tiny(preset), tmp_path / "run")
    ea = EventAccumulator(str(tmp_path / "run"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for t in ("eval/success_mean", "eval/pi0/success_mean", "eval/pi0/success/goal-0",
              "eval/pi0/return/goal-3", "distral/kl/goal-1", "loss/distral_kl"):
        assert t in tags, t
    saved = json.loads(sorted((tmp_path / "run" / "eval").glob("*.json"))[-1].read_text())
    assert set(saved["pi0"]["tasks"]) == {f"goal-{k}" for k in range(4)}
    assert res.final_eval is not None
    assert saved["success_mean"] == pytest.approx(res.final_eval.success_mean)

    # a fresh process view of the run: the same numbers for both policies (save → load)
    ev = evaluate_run(str(tmp_path / "run"), device="cpu")
    assert ev.result.success == res.final_eval.success
    assert ev.result.returns == pytest.approx(res.final_eval.returns)
    assert ev.extra["pi0"].returns == pytest.approx(
        {t: v["return"] for t, v in saved["pi0"]["tasks"].items()})
    assert main(["eval", str(tmp_path / "run"), "--episodes-per-task", "1"]) == 0
    text = capsys.readouterr().out
    assert "task policies πi" in text and "distilled policy π0" in text


def test_distral_checkpoint_roundtrip_gives_identical_actions(tmp_path):
    from mtrl.evaluation import load_policy
    from mtrl.runner import Trainer

    cfg = _tiny("toy-distral", total_steps=320)
    cfg.eval.final = False
    tr = Trainer(cfg, tmp_path / "run")
    tr.run()
    from mtrl.envs import make_env

    env = make_env(cfg.env, seed=0, evaluation=True)
    try:
        agent, _, _ = load_policy(str(tmp_path / "run"), None, "cpu", env)
    finally:
        env.close()
    obs = np.random.default_rng(1).uniform(-1, 1, (8, 2)).astype(np.float32)
    tid = np.arange(8) % 4
    for fn in ("act", "act_pi0"):
        assert np.array_equal(getattr(tr.agent, fn)(obs, tid, True),
                              getattr(agent, fn)(obs, tid, True)), fn


def test_toy_distral_learns():
    """The preset as shipped (120k env steps, ~10-15 s): the task policies reach >= 0.9
    success; π0, which sees no task id, solves at most about one goal in four."""
    from mtrl.runner import train

    cfg = get_preset("toy-distral")
    cfg.log.progress_bar = False
    cfg.device = "cpu"
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, d)
        assert res.final_eval is not None
        assert res.final_eval.success_mean >= 0.9, res.final_eval.table()
        pi0 = json.loads(sorted((__import__("pathlib").Path(d) / "eval").glob("*.json"))[-1]
                         .read_text())["pi0"]
        assert pi0["success_mean"] <= 0.5
    assert math.isfinite(res.final_eval.return_mean)


def test_atari_distral_two_columns_runs_on_frames_and_reports_pi0(tmp_path):
    """atari6-distral in miniature: uint8 frames, π0's own CNN, two-column task logits,
    per-game returns and HNS for the task policies and for π0."""
    from mtrl.runner import train

    cfg = get_preset("atari6-distral")
    cfg.env.tasks = ["Pong", "Breakout"]
    cfg.env.envs_per_task = 2
    cfg.env.max_episode_frames = 400
    cfg.total_steps = 400
    cfg.eval.every = 0
    cfg.eval.episodes_per_task = 1
    cfg.log.every = 200
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 0
    cfg.device = "cpu"
    res = train(cfg, tmp_path / "run")
    assert res.updates == 400 // 20
    saved = json.loads(sorted((tmp_path / "run" / "eval").glob("*.json"))[-1].read_text())
    assert set(saved["pi0"]["tasks"]) == {"Pong", "Breakout"}
    assert "hns_median" in saved["pi0"]


def test_distral_a2c_with_pcgrad_projects_shared_parameters_and_trains_pi0():
    from mtrl.config import CombinerConfig
    from mtrl.optim.combiners import make_combiner

    torch.manual_seed(0)
    agent = build_mta2c(
        obs_shape=(2,), num_tasks=2, num_actions=3, actor_hidden=[8], critic_hidden=[8],
        popart=False, lr=1e-2, hparams=A2CHyperparams(gamma=0.9, ent_coef=0.0),
        combiner=make_combiner("pcgrad", CombinerConfig(diagnostics_every=1)),
        distral=DistralHyperparams(alpha=0.5, beta=10.0, columns=2),
    )
    before = [p.detach().clone() for p in agent.distral.pi0.parameters()]
    m = agent.update(_rollout_batch(agent))
    assert all(torch.isfinite(v).all() for v in m.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.distral.pi0.parameters(),
                                                        strict=True))
    assert "cosine" in agent.combiner_reports()["actor_critic"]
