"""Policy distillation: losses against hand computations, teachers (stable-baselines3 and mtrl
runs) against their own models, the Distiller's learning, gradients and persistence."""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from mtrl.agents.distill import (
    Distiller,
    DistillHyperparams,
    StudentPolicy,
    TaskRegressors,
    Teacher,
    TeacherOutput,
    build_distiller,
    categorical_kl,
    feature_regression_loss,
    gaussian_kl,
)
from mtrl.envs.toy import PointReachTaskEnv, PointReachVectorEnv
from mtrl.teachers import MtrlTeacher, SB3Teacher, load_teacher

sb3 = pytest.importorskip("stable_baselines3")

OBS = gym.spaces.Box(-1.5, 1.5, shape=(2,), dtype=np.float32)
DISC = gym.spaces.Discrete(5)
CONT = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


class _Batch(NamedTuple):
    obs: torch.Tensor
    task_id: torch.Tensor
    num_tasks: int


def _stratified(num_tasks: int, per_task: int, seed: int = 0) -> _Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(num_tasks * per_task, 2, generator=g) * 3 - 1.5
    tid = torch.arange(num_tasks).repeat_interleave(per_task)
    return _Batch(obs, tid, num_tasks)


class LinearTeacher(Teacher):
    """A fixed random linear policy (logits or Gaussian) with linear features: a stand-in
    teacher whose outputs are known exactly."""

    def __init__(self, seed: int, *, discrete: bool, squashed: bool = True,
                 feature_dim: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.discrete, self.squashed, self.kind = discrete, squashed, "policy"
        self.feature_dim = feature_dim
        self.source = f"linear-{seed}"
        out = 5 if discrete else 4
        self.net = nn.Linear(2, out)
        with torch.no_grad():
            self.net.weight.copy_(torch.randn(out, 2, generator=g) * 2)
            self.net.bias.copy_(torch.randn(out, generator=g))
        self.net.requires_grad_(False)
        self.feat = nn.Linear(2, feature_dim or 1)
        self.feat.requires_grad_(False)

    @torch.no_grad()
    def output(self, obs: torch.Tensor) -> TeacherOutput:
        z = self.net(obs.float())
        f = torch.tanh(self.feat(obs.float())) if self.feature_dim else None
        if self.discrete:
            return TeacherOutput(logits=z, features=f)
        mean, log_std = z.chunk(2, -1)
        return TeacherOutput(mean=mean, log_std=log_std.clamp(-1.5, 0.5), features=f)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        out = self.output(torch.as_tensor(obs))
        if self.discrete:
            assert out.logits is not None
            return out.logits.argmax(-1).numpy()
        assert out.mean is not None
        return torch.tanh(out.mean).numpy()


# ----------------------------------------------------------------------------- toy task env
@pytest.mark.parametrize("discrete", [True, False])
def test_task_env_equals_the_vector_envs_sub_env(discrete):
    num_tasks, seed = 3, 7
    rng = np.random.default_rng(0)
    for task in range(num_tasks):
        single = PointReachTaskEnv(num_tasks, task, discrete=discrete)
        vec = PointReachVectorEnv(num_tasks, 1, discrete=discrete, seed=seed,
                                  autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        assert single.observation_space == vec.single_observation_space
        assert single.action_space == vec.single_action_space
        obs_s, _ = single.reset(seed=seed)
        obs_v, _ = vec.reset(seed=seed)
        np.testing.assert_array_equal(obs_s, obs_v[task])
        for t in range(60):
            if discrete:
                a = int(rng.integers(5))
                acts = np.zeros(num_tasks, np.int64)
            else:
                a = rng.uniform(-1, 1, 2).astype(np.float32)
                acts = np.zeros((num_tasks, 2), np.float32)
            acts[task] = a
            obs_s, r_s, term_s, trunc_s, info_s = single.step(a)
            obs_v, r_v, term_v, trunc_v, info_v = vec.step(acts)
            np.testing.assert_array_equal(obs_s, obs_v[task])
            assert r_s == float(r_v[task])
            assert (term_s, trunc_s) == (bool(term_v[task]), bool(trunc_v[task]))
            assert info_s["success"] == bool(info_v["success"][task])
            if term_s or trunc_s:
                assert term_s or t == 49  # 50-step truncation
                break
        # the env restarts after an episode
        single.reset()
        single.step(0 if discrete else np.zeros(2, np.float32))


def test_task_env_success_and_traps():
    env = PointReachTaskEnv(2, 1, discrete=True, seed=0)  # goals (1, 0) [trap] and (-1, 0)
    env.reset(seed=0)
    env.inner._pos[:] = 0.0
    for _ in range(10):
        _, _, term, _, info = env.step(1)  # +x: into goal-0's region, a trap for task 1
        if term:
            break
    assert term and not info["success"]
    env.reset()
    env.inner._pos[:] = 0.0
    successes = [env.step(2)[4]["success"] for _ in range(12)]  # −x: own goal
    assert any(successes)


# ----------------------------------------------------------------------------- losses
def test_categorical_kl_with_temperature_by_hand():
    zt = torch.tensor([[1.0, 2.0, 3.0]])
    zs = torch.tensor([[0.5, 0.0, 1.0]])
    tau = 0.5
    p = np.exp(np.array([1, 2, 3]) / tau)
    p /= p.sum()
    q = np.exp(np.array([0.5, 0.0, 1.0]))
    q /= q.sum()
    expected = float(np.sum(p * np.log(p / q)))
    assert categorical_kl(zt, zs, tau).item() == pytest.approx(expected, rel=1e-5)
    # Q-value teacher at τ = 0.01: essentially the greedy action's cross-entropy
    assert categorical_kl(zt, zs, 0.01).item() == pytest.approx(-math.log(q[2]), rel=1e-4)
    assert categorical_kl(zt, zt, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mt, ms = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    lt, ls = torch.randn(8, 3, generator=g) * 0.5, torch.randn(8, 3, generator=g) * 0.5
    ref = torch.distributions.kl_divergence(
        torch.distributions.Independent(torch.distributions.Normal(mt, lt.exp()), 1),
        torch.distributions.Independent(torch.distributions.Normal(ms, ls.exp()), 1),
    )
    torch.testing.assert_close(gaussian_kl(mt, lt, ms, ls), ref)
    torch.testing.assert_close(gaussian_kl(mt, lt, mt, lt), torch.zeros(8))


def test_feature_regression_by_hand_with_padded_teachers():
    reg = TaskRegressors(3, [2, 1])  # teacher 0 has 2 features, teacher 1 has 1
    with torch.no_grad():
        reg.weight.copy_(torch.arange(12.0).view(2, 3, 2) / 10)
        reg.bias.copy_(torch.tensor([[0.1, -0.1], [0.2, 5.0]]))
    h = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # one row per task
    with torch.no_grad():
        pred, mask = reg(h, per_task=1)
    # f_0(h) = h @ W_0 + b_0 ; W_0 = [[0, .1], [.2, .3], [.4, .5]]
    np.testing.assert_allclose(pred[0].numpy(), [0.0 + 0.8 + 0.1, 0.1 + 1.0 - 0.1], rtol=1e-6)
    np.testing.assert_allclose(pred[1, 0].item(), 0.8 + 0.2, rtol=1e-6)
    target = torch.tensor([[1.0, 1.0], [0.5, 123.0]])  # column 2 of task 1 is padding
    loss = feature_regression_loss(pred, target, mask)
    np.testing.assert_allclose(loss.numpy(), [(0.9 - 1) ** 2 + (1.0 - 1) ** 2, (1.0 - 0.5) ** 2],
                               rtol=1e-5)


def test_student_shapes_and_modes():
    s = StudentPolicy((2,), 3, action_dim=2, hidden=[16, 8], squash=True)
    (mean, log_std), h = s(torch.zeros(6, 2), torch.arange(3).repeat_interleave(2), 2)
    assert mean.shape == log_std.shape == (6, 2) and h.shape == (6, 8) and (h >= 0).all()
    torch.testing.assert_close(s.mode((mean, log_std)), torch.tanh(mean))
    d = StudentPolicy((4, 84, 84), 2, num_actions=6, hidden=[32])
    logits, h = d(torch.zeros(2, 4, 84, 84, dtype=torch.uint8), torch.tensor([0, 1]))
    assert logits.shape == (2, 6) and h.shape == (2, 32)


# ----------------------------------------------------------------------------- distiller
def _distiller(discrete: bool, num_tasks: int = 3, **hp) -> Distiller:
    torch.manual_seed(0)
    return build_distiller(
        obs_shape=(2,), num_tasks=num_tasks, num_actions=5 if discrete else None,
        action_dim=None if discrete else 2, hidden=[64, 64], arch="mlp", arch_cfg=None,
        torso="auto", squash=True, lr=3e-3, hparams=DistillHyperparams(**hp), device="cpu",
    )


@pytest.mark.parametrize("discrete", [True, False])
def test_distiller_fits_fixed_teachers(discrete):
    d = _distiller(discrete)
    d.set_teachers([LinearTeacher(k, discrete=discrete) for k in range(3)])
    batch = _stratified(3, 64)
    first = d.update(batch)["kl"].item()
    for i in range(400):
        m = d.update(_stratified(3, 64, seed=i + 1))
    assert m["kl"].item() < 0.05 * first and m["kl"].item() < 0.05
    if discrete:
        assert m["agreement"].item() > 0.9
    else:
        assert m["action_diff"].item() < 0.05
    assert set(m) >= {"loss", "kl", "agreement"} and all(v.dim() == 0 for v in m.values())
    # the student now acts like each row's teacher
    obs = batch.obs.numpy()
    tid = batch.task_id.numpy()
    a_s, a_t = d.act(obs, tid, deterministic=True), d.teacher_act(obs, tid, deterministic=True)
    if discrete:
        assert (a_s == a_t).mean() > 0.9
    else:
        assert np.abs(a_s - a_t).mean() < 0.05


def test_actor_mimic_feature_regression_learns_and_needs_features():
    d = _distiller(True, feature_coef=0.5)
    with pytest.raises(ValueError, match="features"):
        d.set_teachers([LinearTeacher(k, discrete=True) for k in range(3)])
    dims = [4, 7, 2]
    d.set_teachers([LinearTeacher(k, discrete=True, feature_dim=f) for k, f in enumerate(dims)])
    assert d.regressors is not None and d.regressors.out_dims == dims
    first = d.update(_stratified(3, 32))["feature"].item()
    for i in range(300):
        m = d.update(_stratified(3, 32, seed=i + 1))
    assert m["feature"].item() < 0.1 * first


def test_gradients_reach_only_the_student():
    path = _tmp_sb3("ppo", discrete=True)
    teachers = [SB3Teacher(path, obs_space=OBS, action_space=DISC, device="cpu")
                for _ in range(2)]
    d = _distiller(True, num_tasks=2)
    d.set_teachers(teachers)
    d.update(_stratified(2, 8))
    for t in teachers:
        for p in t.policy.parameters():
            assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in d.student.parameters())


def test_set_teachers_checks_consistency():
    d = _distiller(False)
    with pytest.raises(ValueError, match="squash"):
        d.set_teachers([LinearTeacher(k, discrete=False, squashed=False) for k in range(3)])
    with pytest.raises(ValueError, match="discrete"):
        d.set_teachers([LinearTeacher(k, discrete=True) for k in range(3)])
    with pytest.raises(ValueError, match="one teacher per task"):
        d.set_teachers([LinearTeacher(0, discrete=False)])
    # mse on deterministic actions does not need matching squashing
    d2 = _distiller(False, loss="mse")
    d2.set_teachers([LinearTeacher(k, discrete=False, squashed=False) for k in range(3)])
    assert "mse" in d2.update(_stratified(3, 8))


def test_save_load_on_a_teacherless_distiller_gives_identical_actions():
    d = _distiller(True, feature_coef=0.1)
    teachers = [LinearTeacher(k, discrete=True, feature_dim=3) for k in range(3)]
    d.set_teachers(teachers)
    for i in range(20):
        d.update(_stratified(3, 16, seed=i))
    state = d.state_dict()
    fresh = _distiller(True, feature_coef=0.1)
    fresh.student.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
    fresh.load_state_dict(state)  # no teachers, no regressors yet
    fresh.eval()
    batch = _stratified(3, 32, seed=99)
    obs, tid = batch.obs.numpy(), batch.task_id.numpy()
    np.testing.assert_array_equal(fresh.act(obs, tid, deterministic=True),
                                  d.act(obs, tid, deterministic=True))
    # attaching teachers later restores the saved regressors
    fresh.set_teachers(teachers)
    assert fresh.regressors is not None and d.regressors is not None
    torch.testing.assert_close(fresh.regressors.weight, d.regressors.weight)


# ----------------------------------------------------------------------------- SB3 teachers
_SB3_CACHE: dict[tuple[str, bool], str] = {}


def _tmp_sb3(algo: str, *, discrete: bool, steps: int = 300) -> str:
    """A tiny SB3 model trained for a few hundred steps on task 1 of the 3-task toy (cached
    per session)."""
    import tempfile

    key = (algo, discrete)
    if key not in _SB3_CACHE:
        env = PointReachTaskEnv(3, 1, discrete=discrete, seed=0)
        kw: dict = dict(policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu")
        if algo == "ppo":
            model = sb3.PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, **kw)
        elif algo == "a2c":
            model = sb3.A2C("MlpPolicy", env, n_steps=8, **kw)
        elif algo == "dqn":
            model = sb3.DQN("MlpPolicy", env, learning_starts=100, batch_size=32, **kw)
        else:
            model = sb3.SAC("MlpPolicy", env, learning_starts=100, batch_size=32, **kw)
        model.learn(steps)
        path = tempfile.mkdtemp(prefix="mtrl-sb3-") + f"/{algo}.zip"
        model.save(path)
        _SB3_CACHE[key] = path
    return _SB3_CACHE[key]


@pytest.mark.parametrize(("algo", "discrete"), [("ppo", True), ("a2c", True), ("dqn", True),
                                                ("sac", False), ("ppo", False)])
def test_sb3_teacher_acts_like_model_predict(algo, discrete):
    path = _tmp_sb3(algo, discrete=discrete)
    model = getattr(sb3, algo.upper()).load(path, device="cpu")
    act_space = DISC if discrete else CONT
    teacher = load_teacher(path, "goal-1", obs_space=OBS, action_space=act_space, device="cpu")
    assert isinstance(teacher, SB3Teacher) and teacher.algo == algo
    assert teacher.discrete == discrete
    assert teacher.kind == ("q" if algo == "dqn" else "policy")
    assert teacher.squashed == (algo == "sac")
    assert teacher.feature_dim == 16
    obs = np.random.default_rng(0).uniform(-1.5, 1.5, (64, 2)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(teacher.act(obs, deterministic=True), expected)
    out = teacher.output(torch.as_tensor(obs))
    if discrete:
        assert out.logits is not None and out.logits.shape == (64, 5)
        np.testing.assert_array_equal(out.logits.argmax(-1).numpy(), expected)
        if algo == "dqn":
            q = model.q_net(torch.as_tensor(obs))
            torch.testing.assert_close(out.logits, q)
    else:
        assert out.mean is not None and out.log_std is not None
        a = torch.tanh(out.mean) if algo == "sac" else out.mean.clamp(-1, 1)
        np.testing.assert_allclose(a.numpy(), expected, atol=1e-6)
    assert out.features is not None and out.features.shape == (64, 16)
    sampled = teacher.act(obs, deterministic=False)
    assert sampled.shape == expected.shape


def test_sb3_teacher_space_mismatch_is_a_clear_error(tmp_path):
    path = _tmp_sb3("ppo", discrete=True)
    with pytest.raises(ValueError, match=r"ppo\.zip.*action space Discrete\(5\).*Discrete\(4\)"):
        SB3Teacher(path, obs_space=OBS, action_space=gym.spaces.Discrete(4))
    wide = gym.spaces.Box(-1.5, 1.5, shape=(3,), dtype=np.float32)
    with pytest.raises(ValueError, match="observation space"):
        SB3Teacher(path, obs_space=wide, action_space=DISC)
    with pytest.raises(ValueError, match=r"\.zip.*mtrl run directory"):
        load_teacher(tmp_path / "nope.zip", "goal-0", obs_space=OBS, action_space=DISC)
    with pytest.raises(ValueError, match="neither"):
        load_teacher(tmp_path, "goal-0", obs_space=OBS, action_space=DISC)


class _ImageEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, shape=(36, 36, 3), dtype=np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, True, {}


def test_sb3_image_teacher_transposes_and_normalizes(tmp_path):
    model = sb3.PPO("CnnPolicy", _ImageEnv(), n_steps=8, batch_size=8, seed=0, device="cpu",
                    policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=32)))
    model.save(tmp_path / "cnn.zip")
    model = sb3.PPO.load(tmp_path / "cnn.zip", device="cpu")
    assert model.observation_space.shape == (3, 36, 36)  # SB3 stores channel-first
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (8, 36, 36, 3), dtype=np.uint8)
    chw = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    expected, _ = model.predict(chw, deterministic=True)
    act = gym.spaces.Discrete(3)
    # env channel-first (as mtrl's Atari envs): no transposition
    t1 = SB3Teacher(tmp_path / "cnn.zip", obs_space=model.observation_space, action_space=act)
    np.testing.assert_array_equal(t1.act(chw, deterministic=True), expected)
    # env channel-last: transposed automatically
    t2 = SB3Teacher(tmp_path / "cnn.zip", obs_space=_ImageEnv.observation_space,
                    action_space=act)
    np.testing.assert_array_equal(t2.act(hwc, deterministic=True), expected)
    o1, o2 = t1.output(torch.as_tensor(chw)), t2.output(torch.as_tensor(hwc))
    assert o1.logits is not None and o2.logits is not None
    torch.testing.assert_close(o1.logits, o2.logits)
    np.testing.assert_array_equal(o1.logits.argmax(-1).numpy(), expected)


def test_missing_sb3_says_how_to_install(monkeypatch):
    from mtrl import sb3 as mtrl_sb3

    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    with pytest.raises(ImportError, match=r"pip install stable-baselines3.*mtrl\[sb3\]"):
        mtrl_sb3.require_sb3()


# ----------------------------------------------------------------------------- mtrl teachers
@pytest.fixture(scope="module")
def tiny_sac_run(tmp_path_factory):
    from conftest import tiny_toy_config

    from mtrl.runner import train

    cfg = tiny_toy_config(total_steps=600)
    run_dir = tmp_path_factory.mktemp("distill") / "run"
    train(cfg, run_dir)
    return run_dir


def test_mtrl_teacher_equals_the_runs_actor(tiny_sac_run):
    from mtrl.envs.toy import make_toy_env
    from mtrl.evaluation import load_policy

    env = make_toy_env(4, evaluation=True)
    agent, _, _ = load_policy(str(tiny_sac_run), None, "cpu", env)
    teacher = load_teacher(tiny_sac_run, "goal-2", obs_space=env.single_observation_space,
                           action_space=env.single_action_space, device="cpu")
    assert isinstance(teacher, MtrlTeacher)
    assert teacher.squashed and not teacher.discrete and teacher.feature_dim is None
    obs = np.random.default_rng(0).uniform(-1.5, 1.5, (16, 2)).astype(np.float32)
    out = teacher.output(torch.as_tensor(obs))
    mean, log_std = agent.actor(torch.as_tensor(obs), torch.full((16,), 2))
    torch.testing.assert_close(out.mean, mean)
    torch.testing.assert_close(out.log_std, log_std)
    np.testing.assert_array_equal(
        teacher.act(obs, deterministic=True),
        agent.act(obs, np.full(16, 2), deterministic=True),
    )
    assert all(not p.requires_grad for p in teacher.agent.actor.parameters())
    with pytest.raises(ValueError, match=r"not trained on task 'goal-9'.*goal-0"):
        MtrlTeacher(tiny_sac_run, "goal-9", obs_space=env.single_observation_space,
                    action_space=env.single_action_space)
    with pytest.raises(ValueError, match="does not fit"):
        MtrlTeacher(tiny_sac_run, "goal-0", obs_space=gym.spaces.Box(-1, 1, (3,), np.float32),
                    action_space=env.single_action_space)


# ----------------------------------------------------------------------------- learning check
@pytest.mark.slow
@pytest.mark.parametrize("discrete", [True, False])
def test_sb3_teachers_distil_into_a_multitask_student(tmp_path, discrete):
    """Train SB3 teachers on the 3-task toy, distil them with teacher-driven data (Rusu et
    al.'s setup: the teachers act, the student learns from their outputs) and evaluate the
    student under the mtrl protocol."""
    from mtrl.envs.toy import make_toy_env
    from mtrl.evaluation import evaluate
    from mtrl.sb3 import evaluate_sb3_success, train_toy_teachers

    num_tasks = 3
    algo = "ppo" if discrete else "sac"
    paths = train_toy_teachers(tmp_path, num_tasks, discrete=discrete, seed=0, algo=algo)
    for k, (task, path) in enumerate(paths.items()):
        assert evaluate_sb3_success(path, k, num_tasks, discrete=discrete) >= 0.9, task
    env = make_toy_env(num_tasks, envs_per_task=4, discrete=discrete, seed=0)
    obs_space, act_space = env.single_observation_space, env.single_action_space
    teachers = [load_teacher(paths[t], t, obs_space=obs_space, action_space=act_space)
                for t in env.task_names]
    d = _distiller(discrete, num_tasks=num_tasks)
    d.set_teachers(teachers)
    # dataset: teacher rollouts (sampled actions for state coverage)
    data: list[list[np.ndarray]] = [[] for _ in range(num_tasks)]
    obs, _ = env.reset(seed=0)
    for _ in range(400):
        for k in range(num_tasks):
            data[k].append(obs[env.task_ids == k])
        obs, *_ = env.step(d.teacher_act(obs, env.task_ids, deterministic=False))
    per_task = [torch.as_tensor(np.concatenate(x)) for x in data]
    g = torch.Generator().manual_seed(0)
    for _ in range(1500):
        idx = [torch.randint(len(x), (64,), generator=g) for x in per_task]
        batch_obs = torch.cat([x[i] for x, i in zip(per_task, idx, strict=True)])
        d.update(_Batch(batch_obs, torch.arange(num_tasks).repeat_interleave(64), num_tasks))
    result = evaluate(d, make_toy_env(num_tasks, discrete=discrete, evaluation=True), 10)
    assert result.success_mean >= 0.9, result.table()


def test_mtrl_a2c_teacher_equals_the_runs_policy(tmp_path):
    from mtrl.envs.toy import make_toy_env
    from mtrl.evaluation import load_policy
    from mtrl.presets import get_preset
    from mtrl.runner import train

    cfg = get_preset("toy-a2c")
    cfg.total_steps = 1_600
    cfg.agent.actor_hidden = [16, 16]
    cfg.agent.critic_hidden = [16, 16]
    cfg.eval.every = 0
    cfg.eval.final = False
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 800
    cfg.device = "cpu"
    train(cfg, tmp_path / "run")
    env = make_toy_env(4, discrete=True, evaluation=True)
    agent, _, _ = load_policy(str(tmp_path / "run"), None, "cpu", env)
    teacher = load_teacher(tmp_path / "run", "goal-3", obs_space=env.single_observation_space,
                           action_space=env.single_action_space)
    assert isinstance(teacher, MtrlTeacher) and teacher.discrete and not teacher.squashed
    obs = np.random.default_rng(1).uniform(-1.5, 1.5, (16, 2)).astype(np.float32)
    logits, _ = agent.net(torch.as_tensor(obs), torch.full((16,), 3))
    out = teacher.output(torch.as_tensor(obs))
    assert out.logits is not None and out.features is None
    torch.testing.assert_close(out.logits, logits)
    np.testing.assert_array_equal(teacher.act(obs, deterministic=True), logits.argmax(-1).numpy())


def test_distiller_takes_a_replay_batch():
    from mtrl.data.replay import MultiTaskReplayBuffer

    buf = MultiTaskReplayBuffer(3, 300, (2,), 2, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        o = rng.uniform(-1, 1, (3, 2)).astype(np.float32)
        buf.add(o, rng.uniform(-1, 1, (3, 2)).astype(np.float32), np.zeros(3, np.float32), o,
                np.zeros(3, bool), np.arange(3))
    d = _distiller(False)
    d.set_teachers([LinearTeacher(k, discrete=False) for k in range(3)])
    m = d.update(buf.sample(8))
    assert torch.isfinite(m["loss"]) and m["kl"] > 0
