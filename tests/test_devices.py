"""Device placement, tested on every available device (the ``device`` fixture: cpu, and cuda
when present — skipped otherwise, with the reason): the MT-SAC update, replay sampling, PopArt,
the gradient combiners, A2C/PPO rollouts and a checkpoint saved on one device and loaded on the
other. ``benchmarks/gpu_check.sh`` runs this file on a GPU machine.

Each test checks that the work stays on the device (no silent host copies) and that the device
computes what the CPU computes (to float32 rounding: GPU and CPU kernels sum in different
orders)."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_toy_config
from test_pcgrad import reference_pcgrad
from torch import nn

import mtrl
from mtrl.agents import build_agent
from mtrl.config import AgentConfig
from mtrl.data.replay import Batch, MultiTaskReplayBuffer
from mtrl.modules.popart import PopArtStatistics, TaskValueHead, popart_update_
from mtrl.optim.combiners import make_combiner
from mtrl.presets import get_preset

CUDA = torch.cuda.is_available()
NO_CUDA = ("CUDA is not available on this machine: the cuda half of the device tests runs on a "
           "GPU machine (benchmarks/gpu_check.sh)")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA,
                                                                            reason=NO_CUDA))])
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def _other(device: torch.device) -> str:
    """The other device for cross-device checks (cpu again on a machine without CUDA)."""
    return "cpu" if device.type == "cuda" else ("cuda" if CUDA else "cpu")


def _on(device: torch.device, *tensors: torch.Tensor) -> bool:
    return all(t.device.type == device.type for t in tensors)


# ----------------------------------------------------------------------------- MT-SAC update
@pytest.fixture
def cpu_noise(monkeypatch):
    """Every reparameterization sample draws its noise from one CPU generator (then moves it
    to the sample's device), so that the CPU and the device update see the same numbers;
    call the fixture's value to restart the stream."""
    gen = torch.Generator()
    real = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda t: real(t, device="cpu").normal_(
        generator=gen).to(t.device))
    return lambda: gen.manual_seed(11)


def _batch(device: torch.device, num_tasks: int = 3, per_task: int = 8) -> Batch:
    g = torch.Generator().manual_seed(5)
    n = num_tasks * per_task
    return Batch(obs=torch.randn(n, 6, generator=g).to(device),
                 action=(torch.rand(n, 2, generator=g) * 2 - 1).to(device),
                 reward=torch.randn(n, generator=g).to(device),
                 next_obs=torch.randn(n, 6, generator=g).to(device),
                 terminated=(torch.rand(n, generator=g) < 0.2).float().to(device),
                 task_id=torch.arange(num_tasks).repeat_interleave(per_task).to(device),
                 num_tasks=num_tasks)


@pytest.fixture
def float64():
    """Networks and batches in float64: CPU and GPU kernels round differently, and Adam turns
    a rounding-level difference in a near-zero gradient into a step of ±lr; in float64 the two
    devices agree to ~1e-12 after several updates, so the comparison can be tight."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("popart", [False, True])
def test_sac_update_on_the_device_equals_the_cpu_update(device, cpu_noise, float64, popart):
    cfg = AgentConfig(actor_hidden=[16], critic_hidden=[16, 16], batch_size=24, popart=popart)
    agents = []
    for dev in ("cpu", device.type):
        torch.manual_seed(0)  # networks are initialized on the CPU, then moved
        agents.append(build_agent(cfg, obs_dim=6, action_dim=2, num_tasks=3, device=dev))
    ref, agent = agents
    cpu_noise()
    for _ in range(3):
        m_ref = ref.update(_batch(torch.device("cpu")))
    cpu_noise()
    for _ in range(3):
        m = agent.update(_batch(device))
    for k, v in m.items():
        assert v.dim() == 0 and _on(device, v), k  # metrics stay on the device, no sync
        torch.testing.assert_close(v.cpu(), m_ref[k], atol=1e-9, rtol=1e-9, msg=k)
    assert _on(device, *agent.actor.parameters(), *agent.critic.parameters(), agent.log_alpha)
    for p, q in zip(agent.actor.parameters(), ref.actor.parameters(), strict=True):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), atol=1e-9, rtol=0)
    torch.testing.assert_close(agent.log_alpha.detach().cpu(), ref.log_alpha.detach())
    b, b_ref = _batch(device), _batch(torch.device("cpu"))
    # (on CUDA the critics are one fused ensemble, agent.sac.fused_critics=auto)
    torch.testing.assert_close(agent.critic(b.obs, b.action, b.task_id).detach().cpu(),
                               ref.critic(b_ref.obs, b_ref.action, b_ref.task_id).detach(),
                               atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------- replay
def test_replay_sampling_stays_on_the_device_and_is_stratified(device):
    tasks, envs_per_task = 3, 2
    buf = MultiTaskReplayBuffer(tasks, 300, (4,), 2, device=device, seed=0)
    task_id = np.repeat(np.arange(tasks), envs_per_task)
    for step in range(30):
        # obs = [task, step, env, 0]: every stored row says where it came from
        obs = np.stack([task_id, np.full(6, step), np.arange(6), np.zeros(6)], 1).astype(
            np.float32)
        next_obs = obs + np.array([0, 1, 0, 0], np.float32)
        buf.add(obs, np.zeros((6, 2), np.float32), obs[:, 1] * 10, next_obs,
                np.zeros(6, np.float32), task_id)
    b = buf.sample(16)
    assert buf.generator.device.type == device.type  # indices are drawn on the device
    assert _on(device, b.obs, b.action, b.reward, b.next_obs, b.terminated, b.task_id)
    obs = b.obs.cpu()
    assert torch.equal(b.task_id.cpu(), torch.arange(tasks).repeat_interleave(16))
    assert torch.equal(obs[:, 0].long(), b.task_id.cpu())  # each row from its task's ring
    torch.testing.assert_close(b.reward.cpu(), obs[:, 1] * 10)
    torch.testing.assert_close(b.next_obs.cpu()[:, 1], obs[:, 1] + 1)
    again = MultiTaskReplayBuffer(tasks, 300, (4,), 2, device=device, seed=0)
    again.data.copy_(buf.data)
    again.size, again._size_t = buf.size.copy(), buf._size_t.clone()
    assert torch.equal(again.sample(16).obs, b.obs)  # seeded: the same rows again


# ----------------------------------------------------------------------------- PopArt
def test_popart_statistics_and_preserved_outputs_on_the_device(device):
    torch.manual_seed(0)
    stats = PopArtStatistics(3, beta=0.1).to(device)
    head = TaskValueHead(8, 3).to(device)
    h = torch.randn(30, 8).to(device)
    tid = torch.arange(3).repeat_interleave(10).to(device)
    before = stats.denormalize_ids(head(h, tid), tid).detach()
    targets = (torch.randn(3, 10) * torch.tensor([[1.0], [10.0], [100.0]]) + 5).to(device)
    popart_update_(stats, targets, [head])
    assert _on(device, stats.mu, stats.nu, stats.count, head.weight, head.bias)
    after = stats.denormalize_ids(head(h, tid), tid).detach()
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-5)  # outputs preserved
    y = targets.cpu().double()  # the first debiased update copies the batch moments
    torch.testing.assert_close(stats.mu.cpu().double(), y.mean(1), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(stats.sigma.cpu().double(), y.std(1, correction=0),
                               atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------- combiners
@pytest.mark.parametrize("name", ["mean", "pcgrad"])
def test_combiners_on_the_device_give_the_reference_gradient(device, name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    params = list(net.parameters())
    # The same inputs with opposite targets: the two tasks' gradients conflict.
    x = torch.randn(16, 3).repeat(2, 1).to(device)
    y = torch.cat([torch.full((16, 1), 3.0), torch.full((16, 1), -3.0)]).to(device)

    def task_losses() -> torch.Tensor:
        return (net(x) - y).pow(2).view(2, 16).mean(1)  # 2 tasks: PCGrad's order is fixed

    per_task = []
    for k in range(2):
        grads = torch.autograd.grad(task_losses()[k], params)
        per_task.append(torch.cat([g.reshape(-1) for g in grads]).double().cpu().numpy())
    g = np.stack(per_task)
    if name == "pcgrad":
        g = reference_pcgrad(g, np.array([[1], [0]]))
    expected = g.mean(0)
    combiner = make_combiner(name)
    combiner.watch(net)
    combiner.backward(task_losses(), params)
    assert _on(device, *(p.grad for p in params))
    got = torch.cat([p.grad.reshape(-1) for p in params]).double().cpu().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)
    if name == "pcgrad":  # the surgery changed something: the two tasks conflict here
        assert not np.allclose(expected, np.stack(per_task).mean(0), atol=1e-6)


# ----------------------------------------------------------------------------- A2C / PPO
def _tiny_on_policy(preset: str, device: torch.device):
    cfg = get_preset(preset)
    cfg.agent.actor_hidden = cfg.agent.critic_hidden = [16]
    if preset == "toy-ppo":
        cfg.agent.ppo.n_steps, cfg.agent.ppo.minibatches, cfg.agent.ppo.epochs = 8, 2, 2
    cfg.total_steps = 4096
    cfg.eval.every, cfg.eval.final = 0, False
    cfg.checkpoint.every = 0
    cfg.log.progress_bar = False
    cfg.device = device.type
    return cfg


@pytest.mark.parametrize("preset", ["toy-a2c", "toy-ppo"])
def test_on_policy_rollouts_and_updates_stay_on_the_device(device, preset, tmp_path):
    from mtrl.runner import Trainer

    trainer = Trainer(_tiny_on_policy(preset, device), tmp_path / "run")
    try:
        trainer.collector.reset(seed=0)
        storage = trainer.path.storage
        params = list(trainer.agent.net.parameters())
        before = [p.detach().clone() for p in params]
        it = trainer.path.iterate(trainer.collector, 0)
        assert it.transitions.num_steps == storage.num_steps
        assert _on(device, storage.obs, storage.action, *params)
        (metrics,) = it.metrics
        for k, v in metrics.items():
            assert _on(device, v) and torch.isfinite(v).all(), k
        assert any(not torch.equal(p, q) for p, q in zip(params, before, strict=True))
    finally:
        trainer.close()


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_saved_on_one_device_gives_the_same_actions_on_the_other(device, tmp_path):
    from mtrl.runner import train

    run = tmp_path / "run"
    train(tiny_toy_config(device=device.type), run)
    here = mtrl.load(run, device=device.type)
    there = mtrl.load(run, device=_other(device))
    back = mtrl.load(run, device=device.type)
    obs = np.random.default_rng(0).normal(size=(16, *here.observation_space.shape))
    tasks = list(itertools.islice(itertools.cycle(range(4)), 16))
    a_here = here.predict(obs, tasks)
    assert np.abs(a_here).max() > 0
    np.testing.assert_array_equal(back.predict(obs, tasks), a_here)
    np.testing.assert_allclose(there.predict(obs, tasks), a_here, atol=1e-5, rtol=0)
    # A device change does not change what the agent learned (critics included, whichever
    # critic form each device uses: agent.sac.fused_critics=auto).
    b_here, b_there = _batch(torch.device(device.type), 4, 4), _batch(
        torch.device(_other(device)), 4, 4)
    b_here = b_here._replace(obs=b_here.obs[:, :2], next_obs=b_here.next_obs[:, :2])
    b_there = b_there._replace(obs=b_there.obs[:, :2], next_obs=b_there.next_obs[:, :2])
    q_here = here.agent.critic(b_here.obs, b_here.action, b_here.task_id).detach().cpu()
    q_there = there.agent.critic(b_there.obs, b_there.action, b_there.task_id).detach().cpu()
    torch.testing.assert_close(q_there, q_here, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- captured updates
@pytest.mark.parametrize("agent_name", ["mtsac", "mtppo"])
def test_graph_captured_update_equals_eager_on_cuda(device, float64, agent_name):
    """``agent.compile=graphs`` on CUDA (torch.compile mode reduce-overhead: CUDA graphs,
    capturable Adam) against the eager update on the same device; the CPU's compiled path is
    tests/test_compile.py's."""
    if device.type != "cuda":
        pytest.skip("graph capture needs CUDA; the CPU compile path is in tests/test_compile.py")
    from test_compile import _rollouts, _sac_batches, _state, _updates

    def make(mode: str):
        torch.manual_seed(0)
        cfg = AgentConfig(name=agent_name, actor_hidden=[32, 32], critic_hidden=[32, 32],
                          batch_size=32, compile=mode)
        if agent_name == "mtppo":
            cfg.ppo.epochs, cfg.ppo.minibatches = 2, 2
            return build_agent(cfg, obs_space=gym.spaces.Box(-1, 1, (5,)),
                               action_space=gym.spaces.Discrete(3), num_tasks=4, device=device)
        return build_agent(cfg, obs_dim=5, action_dim=2, num_tasks=4, device=device)

    eager, graphs = make("off"), make("graphs")
    assert graphs.compile_info["mode"] == "graphs"
    if agent_name == "mtsac":
        batches = [b._replace(**{f: getattr(b, f).to(device).double() for f in
                                 ("obs", "action", "reward", "next_obs", "terminated")},
                              task_id=b.task_id.to(device)) for b in _sac_batches(10)]
    else:
        batches = [b._replace(obs=b.obs.to(device).double(), action=b.action.to(device),
                              value=b.value.to(device).double(),
                              returns=b.returns.to(device).double(),
                              task_id=b.task_id.to(device), reward=b.reward.to(device).double(),
                              log_prob=b.log_prob.to(device).double())
                   for b in _rollouts(5, log_prob=True)]
    me, mg = _updates(eager, batches), _updates(graphs, batches)
    for a, b in zip(me, mg, strict=True):
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-8, rtol=1e-8, msg=k)
    se, sg = _state(eager), _state(graphs)
    for k in se:
        torch.testing.assert_close(sg[k], se[k], atol=1e-8, rtol=1e-8, msg=k)
