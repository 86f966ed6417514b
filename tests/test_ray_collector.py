"""Remote env runners on Ray (mtrl.collect.ray): the collector seam with the envs in Ray actors.

One local Ray session (2 CPUs) serves the whole module; tests that need it skip when ray is not
installed. The config checks at the end need no Ray.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time

import numpy as np
import pytest
import torch
from conftest import apply_changes, plugin_file, tiny_toy_config

from mtrl import config as C
from mtrl.agents import build_agent
from mtrl.agents.offpolicy import UniformWarmup
from mtrl.collect import Transitions, VectorCollector
from mtrl.collect.ray import (
    LOCAL_RAY_SYSTEM_CONFIG,
    RayCollector,
    act_seed,
    runner_seeds,
    split_envs,
)
from mtrl.envs import make_env
from mtrl.errors import CollectorError, ConfigError
from mtrl.presets import get_preset


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (left alone if the process already had one)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # CI has no network to report to
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False, _system_config=LOCAL_RAY_SYSTEM_CONFIG)
    yield ray
    if started:
        ray.shutdown()


def _cfg(**changes):
    """tiny_toy_config (toy-reach, 4 tasks x 2 envs) collected by 2 Ray runners."""
    cfg = tiny_toy_config(**changes)
    cfg.collector.name = "ray"
    if "collector__runners" not in changes:
        cfg.collector.runners = 2
    return cfg


def _agent(col, cfg):
    return build_agent(cfg.agent, obs_space=col.spec.obs_space,
                       action_space=col.spec.action_space, num_tasks=col.spec.num_tasks,
                       device=torch.device("cpu"))


def _warmup(seed: int, agent=None) -> UniformWarmup:
    return UniformWarmup(agent, np.random.default_rng(seed), 2)


def _assert_same(a: Transitions, b: Transitions, envs=slice(None), offset: int = 0) -> None:
    """``a`` (restricted to ``envs``) and ``b`` hold the same transitions and episodes."""
    for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a, name)[:, envs], getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.task_id[envs], b.task_id)
    ea, eb = a.episodes, b.episodes
    ids = np.arange(a.task_id.shape[0])[envs]
    keep = np.isin(ea.env, ids)
    np.testing.assert_array_equal(ea.env[keep], eb.env + offset)
    for name in ("step", "task_id", "ret", "length", "success"):
        np.testing.assert_array_equal(getattr(ea, name)[keep], getattr(eb, name), err_msg=name)


# --------------------------------------------------------------------------------------------
# The collector against the in-process one


def test_one_runner_steps_exactly_as_the_in_process_collector(ray_session):
    """Same seed, same warm-up generator, same weights and acting seed: the same transitions,
    step by step, in the warm-up and when acting with the agent."""
    cfg = _cfg(collector__runners=1, collector__prefetch=False)
    col = RayCollector(cfg)
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    try:
        assert col.env_ids == [list(range(8))]
        np.testing.assert_array_equal(col.task_ids, vec.task_ids)
        col.reset(seed=cfg.seed)
        vec.reset(seed=cfg.seed)
        agent = _agent(col, cfg)
        wr, wv = _warmup(7, agent), _warmup(7, agent)
        for _ in range(3):  # 60 steps: episodes of 50 steps end on the way
            a, b = col.collect(wr, 20), vec.collect(wv, 20)
            _assert_same(a, b)
            assert a.policy_version == 0
        assert len(a.episodes) == 8
        wr.warm = wv.warm = False
        torch.manual_seed(act_seed(cfg.seed, 0, 0))  # runner 0's acting generator
        for k in range(3):
            a, b = col.collect(wr, 20), vec.collect(wv, 20)
            _assert_same(a, b)
            assert a.policy_version == k + 1  # published at every call (publish_every=1)
    finally:
        col.close()
        vec.close()


def test_two_runners_return_the_envs_in_global_order(ray_session):
    """Shapes, task ids and env order are the in-process collector's, and each runner's share
    is exactly the in-process env of those envs, seeded with runner_seeds. (The toy env draws
    every sub-env's start from one generator: the envs of runner 1 cannot be those of the
    whole env; Meta-World's, with one generator per sub-env, are:
    test_metaworld_runners_step_exactly_as_in_process.)"""
    cfg = _cfg()
    col = RayCollector(cfg)
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    try:
        assert col.env_ids == [[0, 1, 2, 3], [4, 5, 6, 7]]
        # Runners at the learner's priority (Ray's default worker niceness is 15).
        assert [os.getpriority(os.PRIO_PROCESS, p) for p in col.runner_pids()] == [0, 0]
        assert col.info["tasks_per_runner"] == [["goal-0", "goal-1"], ["goal-2", "goal-3"]]
        np.testing.assert_array_equal(col.task_ids, vec.task_ids)
        assert col.spec.task_names == vec.spec.task_names
        assert col.spec.obs_space == vec.spec.obs_space
        assert col.spec.action_space == vec.spec.action_space
        assert col.spec.benchmark == vec.spec.benchmark
        col.reset(seed=3)
        vec.reset(seed=3)
        a, b = col.collect(_warmup(5), 120), vec.collect(_warmup(5), 120)
        for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
            assert getattr(a, name).shape == getattr(b, name).shape
        np.testing.assert_array_equal(a.task_id, b.task_id)
        np.testing.assert_array_equal(a.action, b.action)  # the learner's warm-up stream
        np.testing.assert_array_equal(a.obs[0, :4], b.obs[0, :4])  # same generator seed 3
        assert not np.array_equal(a.obs[0, 4:], b.obs[0, 4:])  # runner 1's own generator
        # Episodes in the order they ended: by step, then env.
        ep = a.episodes
        assert len(ep) >= 8
        assert list(zip(ep.step, ep.env, strict=True)) == sorted(zip(ep.step, ep.env,
                                                                     strict=True))
        for r, ids in enumerate(col.env_ids):
            part = VectorCollector(make_env(cfg.env, seed=cfg.seed, tasks=vec.task_ids[ids]))
            part.reset(seed=runner_seeds(3, r, 0, ids))
            steps = [part.step(a.action[t, ids]) for t in range(120)]
            _assert_same(a, Transitions.from_steps(steps), envs=slice(ids[0], ids[-1] + 1),
                         offset=ids[0])
            part.close()
    finally:
        col.close()
        vec.close()


def test_policy_version_advances_with_publishes(ray_session):
    cfg = _cfg(collector__publish_every=3, collector__prefetch=False)
    col = RayCollector(cfg)
    try:
        col.reset()
        agent = _agent(col, cfg)
        w = _warmup(0, agent)
        assert col.collect(w, 2).policy_version == 0 and col.version == 0  # warm-up
        w.warm = False
        # First published at the first call that acts, then every 3 updates (1 per call).
        versions = [col.collect(w, 1).policy_version for _ in range(7)]
        assert versions == [1, 1, 1, 2, 2, 2, 3]
        assert col.publish(agent) == 4
        assert col.collect(w, 1).policy_version == 4
        assert col.metrics()["perf/policy_version"] == 4.0
        assert "publish_every - 1 = 2" in col.info["policy_lag"]
    finally:
        col.close()


def _resume_round_trip(cfg, tmp_path, before: list[int], n: int) -> dict:
    """Collect chunks of ``before`` sizes (the first in the warm-up), save the state through
    torch.save/load(weights_only=True), collect 3 chunks of ``n``; a new collector (new runner
    processes) restored from the state returns the same 3 chunks. Returns the state."""
    a = RayCollector(cfg)
    try:
        a.reset(seed=1)
        w = _warmup(2, _agent(a, cfg))
        a.collect(w, before[0])
        w.warm = False
        for k in before[1:]:
            a.collect(w, k)
        torch.save(a.state_dict(), tmp_path / "state.pt")
        w_state = w.rng.bit_generator.state
        expected = [a.collect(w, n) for _ in range(3)]
    finally:
        a.close()
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # checkpoint-safe
    b = RayCollector(cfg)
    try:
        b.load_state_dict(state)
        assert b.started
        w.rng.bit_generator.state = w_state
        for exp in expected:
            got = b.collect(w, n)
            _assert_same(got, exp)
            assert got.policy_version == exp.policy_version
    finally:
        b.close()
    return state


def test_state_dict_resumes_the_runners_exactly(ray_session, tmp_path):
    """A new collector (new runner processes) restored from a checkpointed state continues
    exactly where the first one stood: episodes, acting generators, publish schedule."""
    cfg = _cfg(collector__publish_every=2, collector__prefetch=False)
    state = _resume_round_trip(cfg, tmp_path, [10, 1, 1], 7)
    assert state["version"] == 1 and state["since_publish"] == 2  # publishes next call


def test_prefetch_returns_what_the_synchronous_hand_over_returns(ray_session):
    """With a chunk kept in flight the runner steps the same envs with the same warm-up
    actions: the in-process collector's chunks, in the same order (one runner: the same envs,
    test_one_runner_steps_exactly_as_the_in_process_collector); the warm-up ends one chunk
    later (the chunk in flight was drawn during it), and acting chunks then carry the versions
    published one call earlier."""
    cfg = _cfg(collector__runners=1)
    pre = RayCollector(cfg)
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    try:
        assert pre.prefetch and pre.info["prefetch"]
        assert "1 update(s) more" in pre.info["policy_lag"]
        assert "one chunk longer" in pre.info["warmup"]
        pre.reset(seed=4)
        vec.reset(seed=4)
        agent = _agent(pre, cfg)
        wp, wv = _warmup(9, agent), _warmup(9, agent)
        for _ in range(4):
            _assert_same(pre.collect(wp, 30), vec.collect(wv, 30))
        wp.warm = False
        first = pre.collect(wp, 30)
        assert first.policy_version == 0  # drawn in the warm-up
        _assert_same(first, vec.collect(wv, 30))  # wv: still warm
        assert [pre.collect(wp, 30).policy_version for _ in range(3)] == [1, 2, 3]
        with pytest.raises(CollectorError, match=r"n=30 .* prefetched.*prefetch=false"):
            pre.collect(wp, 10)
    finally:
        pre.close()
        vec.close()


def test_state_dict_keeps_the_chunk_in_flight(ray_session, tmp_path):
    """Saving waits for the chunk in flight and keeps it: the restored collector (new runner
    processes) returns it first and then continues exactly as the first would have."""
    state = _resume_round_trip(_cfg(collector__publish_every=2), tmp_path, [7, 7, 7, 7], 7)
    assert state["pending"]["n"] == 7 and state["pending"]["mode"] == "replay"


# --------------------------------------------------------------------------------------------
# The training loop on remote runners


def _scalars(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    return [e.value for e in ea.Scalars(tag)] if tag in ea.Tags()["scalars"] else []


def test_training_on_ray_runners_is_reproducible_and_resumes_exactly(ray_session, tmp_path):
    """Two seeded runs are identical, and a run stopped half-way and resumed (new runner
    processes) ends in the same state as the uninterrupted one."""
    from mtrl.checkpoint import CheckpointManager, load_file
    from mtrl.runner import train

    cfg = _cfg(total_steps=800, warmup_steps=200, checkpoint__every=0,
               collector__publish_every=2)
    for name in ("a", "b"):
        result = train(copy.deepcopy(cfg), tmp_path / name)
        assert result.env_steps == 800 and not result.interrupted
        assert result.updates == 800 // 8 - 200 // 8 + 1  # as in process
    part = copy.deepcopy(cfg)
    part.total_steps = 400
    train(part, tmp_path / "c")
    result = train(copy.deepcopy(cfg), tmp_path / "c", resume=True)
    assert result.env_steps == 800
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["collector"]["name"] == "ray" and meta["collector"]["runners"] == 2
    assert "at most publish_every - 1 = 1 update(s) behind" in meta["collector"]["policy_lag"]
    assert _scalars(tmp_path / "a", "perf/runner_restarts")[-1] == 0.0
    sa, sb, sc = (load_file(CheckpointManager(tmp_path / n / "checkpoints").latest().path)
                  for n in ("a", "b", "c"))
    assert sa["collector"]["kind"] == "ray"
    # One publish per 2 updates (one update per acting step).
    assert sa["collector"]["version"] == (800 // 8 - 200 // 8 + 1) // 2
    for other in (sb, sc):
        for key, value in sa["agent"]["actor"].items():
            torch.testing.assert_close(value, other["agent"]["actor"][key], rtol=0, atol=0)
        for ra, ro in zip(sa["collector"]["runners"], other["collector"]["runners"],
                          strict=True):
            torch.testing.assert_close(ra["obs"], ro["obs"], rtol=0, atol=0)
            torch.testing.assert_close(ra["acting_rng"], ro["acting_rng"], rtol=0, atol=0)
        assert sa["collector"]["version"] == other["collector"]["version"]


class _KillingCollector(RayCollector):
    """Kills runner 1's process (SIGKILL) before collect call ``kill_at``."""

    kill_at = 40

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def collect(self, policy, n):
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(self.runner_pids()[1], signal.SIGKILL)
            time.sleep(0.2)
        return super().collect(policy, n)


def test_a_killed_runner_is_restarted_and_the_run_goes_on(ray_session, tmp_path, capsys):
    from mtrl.runner import train

    cfg = _cfg(total_steps=800, warmup_steps=200, checkpoint__every=0, log__every=80)
    col = _KillingCollector(cfg)
    result = train(cfg, tmp_path / "run", collector=col)
    assert result.env_steps == 800 and not result.interrupted
    assert col.restarts == [0, 1]
    restarts = _scalars(tmp_path / "run", "perf/runner_restarts")
    assert restarts[0] == 0.0 and restarts[-1] >= 1.0
    err = capsys.readouterr().err
    assert "env runner 1 (goal-2, goal-3) was lost" in err and "restart 1" in err
    # After the restart, runner 1's envs are seeded afresh.
    assert runner_seeds(0, 1, 1, [4, 5]) != runner_seeds(0, 1, 0, [4, 5])


# --------------------------------------------------------------------------------------------
# Env errors: one line naming the runner's tasks

FAULTY_PLUGIN = '''
from mtrl.envs.toy import make_toy_env
from mtrl.registry import register_env


def _names(cfg):
    return [f"goal-{k}" for k in range(cfg.num_tasks)]


def build_faulty(cfg, *, seed, evaluation=False, render=False, tasks=None):
    env = make_toy_env(cfg.num_tasks, envs_per_task=1 if evaluation else cfg.envs_per_task,
                       max_episode_steps=cfg.max_episode_steps, seed=seed,
                       evaluation=evaluation, task_ids=tasks)
    if evaluation or 3 not in env.task_ids:
        return env
    step, calls = env.step, [0]

    def bad_step(action):
        calls[0] += 1
        if calls[0] > 3:
            raise ValueError("simulated fault\\nin the goal-3 simulator")
        return step(action)

    env.step = bad_step
    return env


def build_broken(cfg, *, seed, evaluation=False, render=False, tasks=None):
    if tasks is not None and 0 in tasks:
        raise OSError("no licence for goal-0")
    return make_toy_env(cfg.num_tasks, envs_per_task=cfg.envs_per_task, seed=seed,
                        task_ids=tasks)


register_env("toy-faulty", build_faulty, task_names=_names,
             uses=("num_tasks", "max_episode_steps"), task_subsets=True)
register_env("toy-broken", build_broken, task_names=_names,
             uses=("num_tasks", "max_episode_steps"), task_subsets=True)
'''


@pytest.fixture
def faulty_envs(tmp_path):
    """The plug-in above, loaded here (validation) and by the runners (cfg.plugins); the
    registries are restored afterwards."""
    with plugin_file(tmp_path / "faulty_envs.py", FAULTY_PLUGIN) as path:
        yield path


def test_an_env_error_is_one_line_naming_the_task(ray_session, faulty_envs):
    cfg = _cfg(env__name="toy-faulty", plugins=[faulty_envs])
    C.validate(cfg)
    col = RayCollector(cfg)
    try:
        col.reset()
        w = _warmup(0)
        t0 = time.perf_counter()
        with pytest.raises(CollectorError) as e:  # a RuntimeError
            for _ in range(10):
                col.collect(w, 1)
        assert time.perf_counter() - t0 < 30  # reported, not a hang
    finally:
        col.close()
    assert str(e.value) == ("runner 1 (goal-2, goal-3): ValueError: simulated fault in the "
                            "goal-3 simulator")
    assert col.restarts == [0, 0]  # an env error is not a restart

    cfg = _cfg(env__name="toy-broken", plugins=[faulty_envs])
    with pytest.raises(CollectorError) as e:
        RayCollector(cfg)
    assert str(e.value) == ("runner 0 (goal-0, goal-1): building its envs: OSError: no "
                            "licence for goal-0")


@pytest.mark.slow
def test_mtrl_train_starts_its_own_ray_and_reports_an_env_error_on_one_line(tmp_path):
    """The command line, in a process without Ray: the collector starts a local Ray on the
    machine's CPUs, the env error is one ``mtrl: error:`` line, and Ray is shut down."""
    import subprocess

    pytest.importorskip("ray")
    plugin = tmp_path / "faulty_envs.py"
    plugin.write_text(FAULTY_PLUGIN)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "mtrl", "train", "toy-mtsac", "--plugin", str(plugin),
         "--env.name", "toy-faulty", "--collector", "ray", "--total-steps", "800",
         "--warmup-steps", "200", "--agent.batch-size", "32", "--device", "cpu",
         "--no-progress", "--eval.every", "0", "--run-dir", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "mtrl: error: runner 1 (goal-2, goal-3): ValueError: simulated fault in the goal-3 "
        "simulator")


# --------------------------------------------------------------------------------------------
# Config and command line (no Ray needed)


def test_config_errors_of_the_ray_collector(monkeypatch, tmp_path):
    def error(**changes) -> str:
        cfg = _cfg(**changes)
        with pytest.raises(ConfigError) as e:
            C.validate(cfg)
        return str(e.value)

    ppo = get_preset("toy-ppo")
    ppo.collector.name = "ray"
    with pytest.raises(ConfigError) as e:
        C.validate(ppo)
    assert "collector.name='ray' does not support agent.name='mtppo'" in str(e.value)
    assert "on-policy" in str(e.value) and "mtsac" in str(e.value)
    assert error(collector__runners=0) == "collector.runners=0 must be >= 1"
    assert error(collector__runners=9) == ("collector.runners=9 is more than the 8 training "
                                           "env(s); every runner needs at least one env")
    assert error(collector__publish_every=0) == "collector.publish_every=0 must be > 0"
    assert error(collector__max_restarts=-2).startswith("collector.max_restarts=-2 must be")
    assert error(collector__address="nohost").startswith("collector.address='nohost' is not")
    vector = tiny_toy_config(collector__runners=4)
    with pytest.raises(ConfigError) as e:
        C.validate(vector)
    assert str(e.value).startswith("collector.runners=4 is only used with collector.name='ray'")
    for ok in ("auto", "10.0.0.5:6379", "ray://head:10001", None):
        C.validate(_cfg(collector__address=ok), memory=False)

    # Without ray installed: one line, before any env is built.
    import mtrl.runner as runner
    from mtrl.runner import train

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails

    def no_env(*args, **kwargs):
        raise AssertionError("an env was built")

    monkeypatch.setattr(runner, "make_env", no_env)
    with pytest.raises(ConfigError) as e:
        train(_cfg(), tmp_path / "r")
    assert str(e.value) == "collector.name='ray' needs the ray package: pip install 'mtrl[ray]'"
    assert not (tmp_path / "r").exists()
    C.validate(_cfg(), memory=False)  # evaluating a run does not need Ray


def test_command_line_names_of_the_collector():
    from mtrl.cli import split_overrides

    rest, overrides = split_overrides(["toy-mtsac", "--collector", "ray", "--ray-address",
                                       "auto", "--collector.runners", "4",
                                       "--collector.publish-every", "8"])
    assert rest == ["toy-mtsac"]
    cfg = get_preset("toy-mtsac")
    for key, value in overrides:
        C.set_override(cfg, key, value)
    assert (cfg.collector.name, cfg.collector.address, cfg.collector.runners,
            cfg.collector.publish_every) == ("ray", "auto", 4, 8)
    C.validate(cfg, memory=False)
    # A run may be resumed on another cluster.
    assert "collector.address" in C.RESUMABLE_FIELDS


def test_split_and_seeds():
    assert split_envs(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError):
        split_envs(2, 3)
    assert runner_seeds(5, 1, 0, [4, 5]) == [9, 10]  # seed + global env index
    fresh = runner_seeds(5, 1, 1, [4, 5])
    assert fresh[1] == fresh[0] + 1 and fresh != [9, 10]
    assert act_seed(5, 0, 0) != act_seed(5, 1, 0) != act_seed(5, 1, 1)


# --------------------------------------------------------------------------------------------
# Learning (slow), Meta-World


@pytest.mark.slow
@pytest.mark.parametrize("collect_steps", [1, 10])
def test_toy_mtsac_learns_on_ray_runners(ray_session, tmp_path, collect_steps):
    """toy-mtsac as shipped on two prefetching runners: one vector step per request, and
    chunks of 10 (the same updates per env step): >= 0.9 success."""
    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    cfg = get_preset("toy-mtsac")
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    cfg.collector.name = "ray"
    cfg.collector.runners = 2
    cfg.collect_steps = collect_steps
    train(cfg, tmp_path / "run")
    ev = evaluate_run(str(tmp_path / "run"))
    assert ev.result.success_mean >= 0.9, ev.result.table()


def test_metaworld_runners_step_exactly_as_in_process(ray_session):
    """Meta-World sub-envs have their own generators: with runner_seeds (seed + global env
    index), two runners reproduce the in-process env exactly, goals included."""
    cfg = _cfg()
    cfg.env = C.EnvConfig(name="metaworld", tasks=["reach-v3", "push-v3"])
    C.validate(cfg)
    col = RayCollector(cfg)
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    try:
        col.reset(seed=4)
        vec.reset(seed=4)
        a = col.collect(UniformWarmup(None, np.random.default_rng(1), 4), 30)
        b = vec.collect(UniformWarmup(None, np.random.default_rng(1), 4), 30)
        _assert_same(a, b)
    finally:
        col.close()
        vec.close()


@pytest.mark.slow
def test_metaworld_task_subsets_are_the_benchmarks_envs():
    """A subset of MT10 (the standard benchmark's own goals, env seeds and ids)."""
    from mtrl.envs.metaworld import make_metaworld_env

    full = make_metaworld_env("mt10", seed=3)
    part = make_metaworld_env("mt10", seed=3, env_tasks=[3, 7])
    try:
        assert part.task_names == full.task_names
        np.testing.assert_array_equal(part.task_ids, [3, 7])
        fo, _ = full.reset(seed=[100 + i for i in range(10)])
        po, _ = part.reset(seed=[103, 107])
        np.testing.assert_array_equal(fo[[3, 7]], po)
        rng = np.random.default_rng(0)
        for _ in range(5):
            act = rng.uniform(-1, 1, (10, 4)).astype(np.float32)
            fo, fr, *_ = full.step(act)
            po, pr, *_ = part.step(act[[3, 7]])
            np.testing.assert_array_equal(fo[[3, 7]], po)
            np.testing.assert_array_equal(fr[[3, 7]], pr)
        for i, k in enumerate([3, 7]):
            np.testing.assert_array_equal(full.env.envs[k].unwrapped._target_pos,
                                          part.env.envs[i].unwrapped._target_pos)
    finally:
        full.close()
        part.close()


# --------------------------------------------------------------------------------------------
# MT-IMPALA on remote runners: lagged unrolls with behaviour log-probabilities


def _impala_cfg(**changes):
    """toy-impala (discrete toy, 4 tasks x 4 envs, 5-step unrolls) on 2 Ray runners, small
    networks."""
    cfg = get_preset("toy-impala")
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    cfg.agent.actor_hidden = [16, 16]
    cfg.agent.critic_hidden = [16, 16]
    cfg.env.max_episode_steps = 7  # time limits inside the unrolls
    cfg.collector.name = "ray"
    cfg.collector.runners = 2
    return apply_changes(cfg, changes)


def _impala_parts(cfg):
    from mtrl.agents import build_data_path

    col = RayCollector(cfg)
    agent = _agent(col, cfg)
    path = build_data_path(agent, cfg, col.spec, torch.device("cpu"))
    return col, agent, path


def test_impala_unrolls_carry_what_vtrace_needs(ray_session):
    """The runners act with the published weights: ``log μ(a|s)`` of every sampled action and
    ``V`` of the real last observation of every time-limited episode, as the learner's own
    network computes them on the same inputs; consecutive unrolls join up; with
    publish_every=1 the learner's update sees ρ = 1 (on-policy)."""
    C.validate(_impala_cfg())
    col, agent, path = _impala_parts(_impala_cfg(collector__prefetch=False))
    try:
        col.reset()
        cuts, last = 0, None
        for it in range(3):
            n = path.storage.num_steps
            tr = col.collect(path, n)
            assert tr.policy_version == it + 1
            assert tr.last_obs is not None and tr.last_obs.shape == (16, *col.spec.obs_shape)
            if last is not None:
                np.testing.assert_array_equal(tr.obs[0], last)
            last = tr.last_obs
            assert set(tr.extras) == {"log_prob", "sample", "truncation_value"}
            assert tr.extras["log_prob"].shape == (n, 16)
            obs = torch.as_tensor(tr.obs.reshape(n * 16, -1))
            tid = torch.as_tensor(np.tile(tr.task_id, n))
            sample = torch.as_tensor(tr.extras["sample"].reshape(n * 16))
            with torch.no_grad():
                policy_out, _ = agent.net(obs, tid)
                lp, _ = agent.net.log_prob_entropy(policy_out, sample, tid)
            np.testing.assert_allclose(tr.extras["log_prob"].reshape(-1), lp.numpy(),
                                       rtol=0, atol=1e-5)
            np.testing.assert_array_equal(tr.action, tr.extras["sample"])  # discrete
            cut = tr.truncated & ~tr.terminated
            tv = tr.extras["truncation_value"]
            assert (tv[~cut] == 0).all()
            if cut.any():
                cuts += int(cut.sum())
                t_idx, e_idx = np.nonzero(cut)
                with torch.no_grad():
                    v = agent.value(torch.as_tensor(tr.next_obs[t_idx, e_idx]),
                                    torch.as_tensor(tr.task_id[e_idx]))
                np.testing.assert_allclose(tv[t_idx, e_idx], v.numpy(), rtol=0, atol=1e-5)
            path.storage.fill(obs=tr.obs, last_obs=tr.last_obs, action=tr.extras["sample"],
                              log_prob=tr.extras["log_prob"], reward=tr.reward,
                              terminated=tr.terminated, truncated=tr.truncated,
                              truncation_value=tr.extras["truncation_value"])
            metrics = agent.update(path.storage.trajectory())
            path.storage.after_update()
            assert abs(float(metrics["rho_mean"]) - 1.0) < 1e-5  # on-policy
        assert cuts > 0  # 15 steps of 7-step episodes
    finally:
        col.close()


def test_impala_learner_corrects_for_the_runners_policy_lag(ray_session):
    """With publish_every=3 the runners act with weights up to 2 updates old: the chunks carry
    their version, and the learner's importance weights move away from 1 (V-trace's ρ, c)."""
    col, _, path = _impala_parts(_impala_cfg(collector__publish_every=3,
                                             agent__impala__lr=0.05, collector__prefetch=False))
    try:
        col.reset()
        versions, rho = [], []
        for _ in range(6):
            it = path.iterate(col, 0)
            versions.append(it.transitions.policy_version)
            rho.append(float(it.metrics[0]["rho_mean"]))
            assert path.storage.step == 0
        assert versions == [1, 1, 1, 2, 2, 2]
        assert abs(rho[0] - 1.0) < 1e-5 and abs(rho[3] - 1.0) < 1e-5  # fresh weights
        assert rho[1] < 1.0 - 1e-4 and rho[2] < 1.0 - 1e-4  # lagged: ρ = min(1, π/μ)
    finally:
        col.close()


def test_impala_trains_on_ray_runners_checkpoints_and_resumes(ray_session, tmp_path):
    """mtrl's loop with MT-IMPALA on two runners: runs, logs V-trace's ρ, checkpoints, and a run
    stopped half-way and resumed ends with the uninterrupted run's weights."""
    from mtrl.checkpoint import CheckpointManager, load_file
    from mtrl.runner import train

    cfg = _impala_cfg(total_steps=800, checkpoint__every=400, log__every=160,
                      eval__every=0, eval__final=False)
    result = train(copy.deepcopy(cfg), tmp_path / "a")
    assert result.env_steps == 800 and result.updates == 800 // 80
    assert _scalars(tmp_path / "a", "loss/rho_mean")
    part = copy.deepcopy(cfg)
    part.total_steps = 400
    train(part, tmp_path / "b")
    result = train(copy.deepcopy(cfg), tmp_path / "b", resume=True)
    assert result.env_steps == 800
    sa, sb = (load_file(CheckpointManager(tmp_path / n / "checkpoints").latest().path)
              for n in ("a", "b"))
    # One publish per update, and the one of the chunk in flight at the end (prefetch).
    assert sa["collector"]["kind"] == "ray" and sa["collector"]["version"] == 10 + 1
    assert sa["collector"]["pending"]["n"] == 5 and sb["collector"]["pending"]["n"] == 5
    for key, value in sa["agent"]["net"].items():
        torch.testing.assert_close(value, sb["agent"]["net"][key], rtol=0, atol=0)


@pytest.mark.slow
def test_toy_impala_learns_on_two_ray_runners(ray_session, tmp_path):
    """The toy-impala preset, its 16 envs on two runners without prefetch (as its docstring
    says to run it on Ray): >= 0.9 success. With prefetch, the one extra update of lag on
    every unroll leaves goals unlearned on seed 0 (0.50): the same run with its learning rate
    ~0 gives the same losses with and without prefetch, so the data is right and the lag is
    what costs."""
    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    cfg = get_preset("toy-impala")
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    cfg.collector.name = "ray"
    cfg.collector.runners = 2
    cfg.collector.prefetch = False
    train(cfg, tmp_path / "run")
    ev = evaluate_run(str(tmp_path / "run"))
    assert ev.result.success_mean >= 0.9, ev.result.table()
