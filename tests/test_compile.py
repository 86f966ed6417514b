"""``agent.compile`` (mtrl/agents/compiling.py, LeanRL's compiled updates) and fused critics.

* compiled MT-SAC, A2C and PPO updates give the eager updates' parameters and metrics within
  1e-5 over seeded updates (the noise is drawn from the same generator in the same order; in
  float64 they agree to ~1e-11, the rest is float32 rounding of reordered reductions);
* ``graphs`` on a CPU device compiles only, says so, and runs;
* bad ``agent.compile`` / ``agent.sac.fused_critics`` values are one-line errors naming the
  field; ``mtrl train toy-mtsac --agent.compile default`` runs end to end;
* fused critic ensembles compute the separate critics' Q values and gradients from the same
  weights, and checkpoints (networks and Adam state) load across the two forms.

Compiling on this 2-core CPU takes tens of seconds per agent; the sizes are small so that the
compiled code is quick once built.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from mtrl import config as C
from mtrl.agents import build_agent
from mtrl.agents.a2c import A2CHyperparams, build_mta2c
from mtrl.agents.compiling import cpu_compiler
from mtrl.agents.ppo import PPOHyperparams, build_mtppo
from mtrl.agents.sac import MTSAC, SACHyperparams, build_mtsac
from mtrl.cli import main
from mtrl.config import AgentConfig, CombinerConfig
from mtrl.data.replay import Batch
from mtrl.data.rollout import RolloutBatch
from mtrl.modules.policies import TwinQCritic, critic_state_to_fused, critic_state_to_separate
from mtrl.presets import get_preset

if cpu_compiler() is None and not torch.cuda.is_available():
    pytest.skip("torch.compile on a CPU needs a C++ compiler (g++/clang++), none on PATH",
                allow_module_level=True)

T, PER, OBS, ACT = 4, 8, 5, 2
TOL = 1e-5


def _sac(mode: str, **changes: object) -> MTSAC:
    cfg = AgentConfig(actor_hidden=[32, 32], critic_hidden=[32, 32], batch_size=T * PER,
                      compile=mode)
    for key, value in changes.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return build_agent(cfg, obs_dim=OBS, action_dim=ACT, num_tasks=T, device="cpu")


def _sac_batches(n: int, per: int = PER) -> list[Batch]:
    g = torch.Generator().manual_seed(7)
    b = T * per
    scales = torch.tensor([1.0, 2.0, 4.0, 0.5])  # per-task reward scales, for PopArt
    return [Batch(obs=torch.randn(b, OBS, generator=g),
                  action=torch.rand(b, ACT, generator=g) * 2 - 1,
                  reward=torch.randn(b, generator=g) * scales.repeat_interleave(per),
                  next_obs=torch.randn(b, OBS, generator=g),
                  terminated=(torch.rand(b, generator=g) < 0.1).float(),
                  task_id=torch.arange(T).repeat_interleave(per), num_tasks=T)
            for _ in range(n)]


def _updates(agent, batches, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return [agent.update(b) for b in batches]


def _state(agent) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of an agent's networks, by name."""
    mods = {"net": getattr(agent, "net", None), "actor": getattr(agent, "actor", None),
            "critic": getattr(agent, "critic", None),
            "critic_target": getattr(agent, "critic_target", None)}
    out = {f"{m}.{k}": v.detach().clone() for m, mod in mods.items() if mod is not None
           for k, v in mod.state_dict().items()}
    if hasattr(agent, "log_alpha"):
        out["log_alpha"] = agent.log_alpha.detach().clone()
    return out


def _assert_same_run(eager, compiled, metrics_e, metrics_c, before) -> None:
    assert len(metrics_e) == len(metrics_c)
    for me, mc in zip(metrics_e, metrics_c, strict=True):
        assert me.keys() == mc.keys()
        for k in me:
            torch.testing.assert_close(mc[k], me[k], atol=TOL, rtol=0, msg=k)
    se, sc = _state(eager), _state(compiled)
    assert se.keys() == sc.keys()
    moved = 0.0
    for k in se:
        # PopArt's moments μ, ν are in reward units (squared), where float32 rounding is
        # relative: they are compared to 1e-5 relative, everything else absolute.
        rtol = TOL if k.endswith((".mu", ".nu")) else 0.0
        torch.testing.assert_close(sc[k], se[k], atol=TOL, rtol=rtol, msg=k)
        moved = max(moved, (se[k].float() - before[k].float()).abs().max().item())
    assert moved > 1e-3  # the updates did change the networks


# ----------------------------------------------------------------------------- MT-SAC
def test_compiled_mtsac_update_equals_eager_over_20_updates():
    # Diagnostics every 5 updates: updates 0, 5, 10, 15 run their loss phases eagerly (the
    # combiners record per-task gradients), the others compiled; PopArt critics.
    combiner = CombinerConfig(diagnostics_every=5)
    eager = _sac("off", popart=True, combiner=combiner)
    compiled = _sac("default", popart=True, combiner=combiner)
    before = _state(eager)
    assert all(torch.equal(v, _state(compiled)[k]) for k, v in before.items())
    batches = _sac_batches(20)
    _assert_same_run(eager, compiled, _updates(eager, batches), _updates(compiled, batches),
                     before)
    info = compiled.compile_info
    assert info["mode"] == "default"
    assert any("records per-task gradients" in n for n in info["notes"])
    # PopArt statistics moved the same way
    torch.testing.assert_close(compiled.critic.popart.sigma, eager.critic.popart.sigma,
                               atol=TOL, rtol=0)
    assert not torch.allclose(eager.critic.popart.sigma, torch.ones(T))


def test_compiled_mtsac_with_pcgrad_actor_runs_its_actor_loss_eagerly():
    eager = _sac("off", actor_combiner="pcgrad", grad_clip=1.0)
    compiled = _sac("default", actor_combiner="pcgrad", grad_clip=1.0)
    before = _state(eager)
    batches = _sac_batches(6)
    _assert_same_run(eager, compiled, _updates(eager, batches), _updates(compiled, batches),
                     before)
    assert any(n.startswith("actor loss: eager") and "'pcgrad'" in n
               for n in compiled.compile_info["notes"])


def test_graphs_on_cpu_compiles_only_says_so_and_runs():
    agent = _sac("graphs")
    info = agent.compile_info
    assert info["requested"] == "graphs" and info["mode"] == "default"
    assert "on cpu the update is compiled only" in info["notes"][0]
    before = _state(agent)
    for m in _updates(agent, _sac_batches(3)):
        assert all(torch.isfinite(v).all() for v in m.values())
    assert not torch.equal(_state(agent)["actor.body.net.0.weight"],
                           before["actor.body.net.0.weight"])


# ----------------------------------------------------------------------------- A2C / PPO
def _rollouts(n: int, *, per: int = 16, log_prob: bool = False) -> list[RolloutBatch]:
    g = torch.Generator().manual_seed(3)
    b = T * per
    return [RolloutBatch(obs=torch.randn(b, OBS, generator=g),
                         action=torch.randint(0, 3, (b,), generator=g),
                         value=torch.randn(b, generator=g),
                         returns=torch.randn(b, generator=g) * 5,
                         task_id=torch.arange(T).repeat_interleave(per), num_tasks=T,
                         reward=torch.randn(b, generator=g),
                         log_prob=(-torch.rand(b, generator=g) - 0.5) if log_prob else None)
            for _ in range(n)]


def test_compiled_a2c_update_equals_eager_over_20_updates():
    def make(mode: str):
        torch.manual_seed(0)
        return build_mta2c(obs_shape=(OBS,), num_tasks=T, num_actions=3, actor_hidden=[32],
                           critic_hidden=[32], popart=True, popart_beta=0.1, lr=1e-3,
                           hparams=A2CHyperparams(grad_clip=0.5), compile_mode=mode)

    eager, compiled = make("off"), make("default")
    before = _state(eager)
    batches = _rollouts(20)
    _assert_same_run(eager, compiled, _updates(eager, batches), _updates(compiled, batches),
                     before)


def test_compiled_ppo_update_equals_eager():
    def make(mode: str):
        torch.manual_seed(0)
        return build_mtppo(obs_shape=(OBS,), num_tasks=T, num_actions=3, actor_hidden=[32],
                           critic_hidden=[32], popart=True, lr=1e-3,
                           hparams=PPOHyperparams(epochs=2, minibatches=2, clip_value=0.2),
                           compile_mode=mode)

    eager, compiled = make("off"), make("default")
    before = _state(eager)
    batches = _rollouts(5, log_prob=True)
    _assert_same_run(eager, compiled, _updates(eager, batches), _updates(compiled, batches),
                     before)


# ----------------------------------------------------------------------------- config / CLI
def test_bad_compile_value_is_a_one_line_error_naming_the_field(capsys):
    cfg = get_preset("toy-mtsac")
    cfg.agent.compile = "fast"
    with pytest.raises(C.ConfigError) as e:
        C.validate(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert "agent.compile='fast'" in msg and "off, default, graphs" in msg
    cfg = get_preset("toy-distill")
    cfg.agent.compile = "default"
    with pytest.raises(C.ConfigError, match=r"agent\.compile='default'.*'distill'.*off"):
        C.validate(cfg)
    assert main(["train", "toy-mtsac", "--agent.compile", "graph"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "agent.compile='graph'" in err


def test_train_toy_mtsac_compiled_end_to_end(tmp_path):
    run = tmp_path / "r"
    assert main(["train", "toy-mtsac", "--agent.compile", "default", "--total-steps", "400",
                 "--warmup-steps", "200", "--agent.batch-size", "32",
                 "--agent.actor-hidden", "16,16", "--agent.critic-hidden", "16,16",
                 "--run-dir", str(run), "--no-progress", "--eval.final", "false",
                 "--device", "cpu"]) == 0
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["compile"]["requested"] == "default" and meta["compile"]["mode"] == "default"
    log = (run / "train.log").read_text()
    assert log.count("agent.compile=default: the update runs default") == 1
    from mtrl.checkpoint import CheckpointManager, load_file

    state = load_file(CheckpointManager(run / "checkpoints").latest().path)
    assert state["loop"]["updates"] > 0


# ----------------------------------------------------------------------------- fused critics
def _critic_pair(**kw) -> tuple[TwinQCritic, TwinQCritic]:
    torch.manual_seed(0)
    separate = TwinQCritic(OBS, ACT, T, [16, 16], **kw)
    fused = TwinQCritic(OBS, ACT, T, [16, 16], fused=True, **kw)
    fused.load_state_dict(separate.state_dict())  # converted by the load hook
    return separate, fused


@pytest.mark.parametrize("num_atoms", [None, 11])
def test_fused_critics_give_the_separate_q_values_and_gradients(num_atoms):
    separate, fused = _critic_pair(num_atoms=num_atoms)
    assert fused.fused is not None and not hasattr(fused, "qs")
    b = _sac_batches(1)[0]
    args = (b.obs, b.action, b.task_id, PER)
    q_s, q_f = separate(*args), fused(*args)
    assert q_f.shape == q_s.shape == (2, T * PER)
    torch.testing.assert_close(q_f, q_s, atol=1e-6, rtol=0)
    assert not torch.allclose(q_s[0], q_s[1])  # two different members
    weights = torch.randn(q_s.shape)
    (weights * q_s).pow(2).sum().backward()
    (weights * q_f).pow(2).sum().backward()
    grads_s = {k: p.grad for k, p in separate.named_parameters()}
    grads_f = {k: p.grad for k, p in fused.named_parameters()}
    expected = critic_state_to_fused(grads_s, 2, 3)
    assert expected.keys() == grads_f.keys()
    for k, g in grads_f.items():
        torch.testing.assert_close(g, expected[k], atol=1e-6, rtol=0, msg=k)
        assert g.abs().max() > 0


def test_fused_and_separate_state_dicts_convert_both_ways():
    separate, fused = _critic_pair()
    sd = fused.state_dict()
    assert set(sd) == {f"fused.layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")}
    back = critic_state_to_separate(sd, 2, 3)
    for k, v in separate.state_dict().items():
        assert torch.equal(back[k], v)
    torch.manual_seed(5)
    other = TwinQCritic(OBS, ACT, T, [16, 16])
    other.load_state_dict(fused.state_dict())  # fused → separate through the hook
    b = _sac_batches(1)[0]
    torch.testing.assert_close(other(b.obs, b.action, b.task_id), separate(b.obs, b.action,
                                                                           b.task_id))


@pytest.mark.parametrize("direction", ["separate->fused", "fused->separate"])
def test_agent_checkpoints_load_across_critic_forms(direction):
    def agent(fused: bool) -> MTSAC:
        torch.manual_seed(0)
        return build_mtsac(obs_dim=OBS, action_dim=ACT, num_tasks=T, actor_hidden=[16],
                           critic_hidden=[16, 16], actor_lr=1e-3, critic_lr=1e-3,
                           alpha_lr=1e-3, init_alpha=0.5, hparams=SACHyperparams(),
                           fused_critics=fused)

    src_fused = direction.startswith("fused")
    src, dst = agent(src_fused), agent(not src_fused)
    batches = _sac_batches(3)
    _updates(src, batches[:2])  # Adam has state now
    dst.load_state_dict(copy.deepcopy(src.state_dict()))  # as from a file: nothing shared
    # One more update from the same state (networks and Adam moments) and the same noise.
    _updates(src, batches[2:], seed=9)
    _updates(dst, batches[2:], seed=9)
    b = batches[0]
    for a, c in ((src.critic, dst.critic), (src.critic_target, dst.critic_target)):
        torch.testing.assert_close(c(b.obs, b.action, b.task_id), a(b.obs, b.action, b.task_id),
                                   atol=1e-5, rtol=0)
    obs, tid = np.random.default_rng(0).normal(size=(8, OBS)), np.arange(8) % T
    np.testing.assert_allclose(dst.act(obs, tid, True), src.act(obs, tid, True), atol=1e-5)


def test_fused_critics_option_resolves_and_checks():
    assert _sac("off").critic.fused is None  # auto: separate critics on CPU
    assert _sac("off", sac=C.SACConfig(fused_critics="on")).critic.fused is not None
    cfg = get_preset("toy-mtsac")
    cfg.agent.sac.fused_critics = "yes"
    with pytest.raises(C.ConfigError, match=r"agent\.sac\.fused_critics='yes'.*auto, on, off"):
        C.validate(cfg)
    cfg = get_preset("toy-mtsac")
    cfg.agent.sac.fused_critics = "on"
    cfg.agent.critic_arch = "multihead"
    with pytest.raises(C.ConfigError, match=r"fused_critics='on'.*critic_arch='multihead'"):
        C.validate(cfg)
    cfg.agent.critic_arch = "mlp"
    cfg.agent.popart = True
    with pytest.raises(C.ConfigError, match=r"fused_critics='on'.*agent\.popart=true"):
        C.validate(cfg)


def test_compiling_on_a_cpu_without_a_compiler_is_a_one_line_error(monkeypatch):
    import mtrl.agents.compiling as K

    monkeypatch.setattr(K, "cpu_compiler", lambda: None)
    with pytest.raises(ValueError, match=r"agent.compile='default' on a CPU device needs a C\+\+"):
        K.resolve_compile_mode("default", "cpu")
    assert K.resolve_compile_mode("off", "cpu") == ("off", [])
