"""The pipelined collector (mtrl.collect.pipelined): env workers that step while the learner
updates, with one update of policy lag.

Given the same actions it returns exactly what the in-process VectorCollector returns; the
actions of step t+1 are computed before the update that follows step t; env errors and dead
workers are one-line CollectorErrors naming the tasks, not hangs; no process outlives close();
training with it checkpoints and resumes exactly.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import plugin_file, tiny_toy_config

from mtrl import config as C
from mtrl.agents import build_agent
from mtrl.agents.offpolicy import UniformWarmup
from mtrl.collect import Transitions, VectorCollector
from mtrl.collect.pipelined import PipelinedCollector
from mtrl.envs import make_env
from mtrl.errors import CollectorError, ConfigError
from mtrl.presets import get_preset


def _cfg(**changes):
    """tiny_toy_config (toy-reach, 4 tasks x 2 envs) on the pipelined collector."""
    cfg = tiny_toy_config(**changes)
    cfg.collector.name = "pipelined"
    return cfg


def _agent(col, cfg):
    return build_agent(cfg.agent, obs_space=col.spec.obs_space,
                       action_space=col.spec.action_space, num_tasks=col.spec.num_tasks,
                       device=torch.device("cpu"))


def _warmup(seed: int, agent=None, dim: int = 2) -> UniformWarmup:
    return UniformWarmup(agent, np.random.default_rng(seed), dim)


def _assert_same(a: Transitions, b: Transitions) -> None:
    for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "task_id"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    for name in ("step", "env", "task_id", "ret", "length", "success"):
        np.testing.assert_array_equal(getattr(a.episodes, name), getattr(b.episodes, name),
                                      err_msg=f"episodes.{name}")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --------------------------------------------------------------------------------------------
# The same transitions as the in-process collector


def test_toy_transitions_equal_the_vector_collectors_for_the_same_actions():
    """One worker holds the whole toy env: warm-up actions from the same generator, then the
    agent acting from the same torch seed (no updates in between, so the lag changes nothing):
    the same observations, rewards, flags, true next observations at autoresets, episodes."""
    cfg = _cfg(env__max_episode_steps=7)  # time limits, and traps ending episodes early
    col = PipelinedCollector(cfg)
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    try:
        assert col.num_envs == 8 and col.info["envs_per_worker"] == [8]
        np.testing.assert_array_equal(col.task_ids, vec.task_ids)
        assert col.spec.task_names == vec.spec.task_names
        assert col.spec.benchmark == vec.spec.benchmark
        np.testing.assert_array_equal(col.reset(seed=3), vec.reset(seed=3))
        agent = _agent(col, cfg)
        wp, wv = _warmup(7, agent), _warmup(7, agent)
        for n in (1, 20, 5, 1, 14):
            _assert_same(col.collect(wp, n), vec.collect(wv, n))
        # The agent's own stochastic policy, from new episodes (a reset drops the step in
        # flight, which was drawn by the warm-up: the lag).
        wp.warm = wv.warm = False
        np.testing.assert_array_equal(col.reset(seed=5), vec.reset(seed=5))
        torch.manual_seed(11)
        expected = [vec.collect(wv, n) for n in (3, 1, 16)]
        torch.manual_seed(11)
        got = [col.collect(wp, n) for n in (3, 1, 16)]
        ended = 0
        for g, e in zip(got, expected, strict=True):
            _assert_same(g, e)
            ended += len(g.episodes)
        assert ended >= 8  # episodes ended (7-step limit) and were reported
        # Where an episode ended, next_obs is its last observation, not the next start.
        tr = got[-1]
        done = tr.terminated | tr.truncated
        assert done.any() and not np.array_equal(tr.next_obs[:-1][done[:-1]],
                                                  tr.obs[1:][done[:-1]])
    finally:
        col.close()
        vec.close()


def test_metaworld_two_workers_equal_the_vector_collector():
    """A 2-task Meta-World env split over two workers (one task each, the benchmark's goals
    and env seeds) steps exactly as the in-process env, through a 500-step time limit."""
    cfg = _cfg()
    cfg.env = C.EnvConfig(name="metaworld", tasks=["reach-v3", "push-v3"])
    cfg.collector.workers = 2
    C.validate(cfg, memory=False)
    col = PipelinedCollector(cfg)
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    try:
        assert col.info["tasks_per_worker"] == [["reach-v3"], ["push-v3"]]
        np.testing.assert_array_equal(col.reset(seed=4), vec.reset(seed=4))
        wp, wv = _warmup(1, dim=4), _warmup(1, dim=4)
        episodes = 0
        for n in (1, 250, 250, 9):
            a, b = col.collect(wp, n), vec.collect(wv, n)
            _assert_same(a, b)
            episodes += len(a.episodes)
        assert episodes == 2  # both envs hit the 500-step limit
    finally:
        col.close()
        vec.close()


# --------------------------------------------------------------------------------------------
# The pipeline and its lag


class _RecordingPolicy:
    """Acts with zeros and records every call; ``update()`` is a fake update that records
    itself and advances the policy version."""

    def __init__(self, events: list, dim: int = 2) -> None:
        self.events = events
        self.version = 0
        self.dim = dim
        self.seen: list[np.ndarray] = []

    def act(self, obs, task_id):
        self.events.append(("act", self.version))
        self.seen.append(obs.copy())
        return np.zeros((obs.shape[0], self.dim), np.float32)

    def update(self):
        self.events.append(("update", self.version))
        self.version += 1


def test_the_actions_of_step_t_plus_1_are_computed_before_the_update_after_step_t():
    events: list = []
    policy = _RecordingPolicy(events)
    col = PipelinedCollector(_cfg())
    try:
        col.reset(seed=0)
        chunks = []
        for _ in range(4):
            chunks.append(col.collect(policy, 1))
            policy.update()
    finally:
        col.close()
    # act(step 0), act(step 1), update 0, act(step 2), update 1, ...: one act ahead.
    assert events == [("act", 0), ("act", 0), ("update", 0), ("act", 1), ("update", 1),
                      ("act", 2), ("update", 2), ("act", 3), ("update", 3)]
    # Step t >= 1 was acted on by the policy of version t - 1 (the vector collector: t).
    assert [c.policy_version for c in chunks] == [0, 0, 1, 2]
    # The actions of step t + 1 came from step t's next observations.
    for t in range(3):
        np.testing.assert_array_equal(policy.seen[t + 1], chunks[t + 1].obs[0])
        np.testing.assert_array_equal(policy.seen[t + 1], chunks[t].next_obs[0])

    # The in-process collector, for comparison: no lag.
    events.clear()
    policy = _RecordingPolicy(events)
    vec = VectorCollector(make_env(_cfg().env, seed=0))
    vec.reset(seed=0)
    versions = []
    for _ in range(4):
        versions.append(vec.collect(policy, 1).policy_version)
        policy.update()
    assert versions == [0, 1, 2, 3]
    assert events[:3] == [("act", 0), ("update", 0), ("act", 1)]


SLOW_PLUGIN = '''
import time

from mtrl.envs.toy import make_toy_env
from mtrl.registry import register_env


def build_slow(cfg, *, seed, evaluation=False, render=False, tasks=None):
    env = make_toy_env(cfg.num_tasks, envs_per_task=1 if evaluation else cfg.envs_per_task,
                       max_episode_steps=cfg.max_episode_steps, seed=seed,
                       evaluation=evaluation, task_ids=tasks)
    step = env.step

    def slow_step(action):
        time.sleep(0.1)
        return step(action)

    env.step = slow_step
    return env


register_env("toy-slow", build_slow, task_names=lambda cfg: [f"goal-{k}" for k in
             range(cfg.num_tasks)], uses=("num_tasks", "max_episode_steps"), task_subsets=True)
'''


def test_the_envs_step_during_the_update(plugin_envs):
    """Env step 100 ms (sleeping), fake update 100 ms: the learner waits for the envs only
    on the first step; with no update in between it waits the whole step."""
    cfg = _cfg(env__name="toy-slow", plugins=[plugin_envs])
    col = PipelinedCollector(cfg)
    try:
        col.reset(seed=0)
        w = _warmup(0)
        col.collect(w, 1)  # nothing was in flight: acts and waits
        col.metrics()
        t0 = time.perf_counter()
        for _ in range(5):
            time.sleep(0.1)  # the update
            col.collect(w, 1)
        overlapped = time.perf_counter() - t0
        waited = col.metrics()["perf/env_wait_ms"]
        for _ in range(5):
            col.collect(w, 1)  # no update: the envs are the slower side
        slower = col.metrics()["perf/env_wait_ms"]
    finally:
        col.close()
    assert waited < 30.0, waited
    assert overlapped < 0.75, overlapped  # sequential: 5 x (100 + 100) ms = 1 s
    assert slower > 90.0, slower


# --------------------------------------------------------------------------------------------
# Faults: one line naming the tasks, never a hang

FAULTY_PLUGIN = '''
import time

from mtrl.envs.toy import make_toy_env
from mtrl.registry import register_env


def _names(cfg):
    return [f"goal-{k}" for k in range(cfg.num_tasks)]


def _toy(cfg, seed, evaluation, tasks):
    return make_toy_env(cfg.num_tasks, envs_per_task=1 if evaluation else cfg.envs_per_task,
                        max_episode_steps=cfg.max_episode_steps, seed=seed,
                        evaluation=evaluation, task_ids=tasks)


def _after(env, calls, fault):
    step, n = env.step, [0]

    def bad_step(action):
        n[0] += 1
        if n[0] > calls:
            fault()
        return step(action)

    env.step = bad_step
    return env


def _raise():
    raise ValueError("simulated fault\\nin the goal-3 simulator")


def build_faulty(cfg, *, seed, evaluation=False, render=False, tasks=None):
    env = _toy(cfg, seed, evaluation, tasks)
    if evaluation or 3 not in env.task_ids:
        return env
    return _after(env, 3, _raise)


def build_hanging(cfg, *, seed, evaluation=False, render=False, tasks=None):
    env = _toy(cfg, seed, evaluation, tasks)
    if evaluation or 3 not in env.task_ids:
        return env
    return _after(env, 3, lambda: time.sleep(60))


def build_broken(cfg, *, seed, evaluation=False, render=False, tasks=None):
    if tasks is not None and 0 in tasks:
        raise OSError("no licence for goal-0")
    return _toy(cfg, seed, evaluation, tasks)


for name, build in (("toy-faulty", build_faulty), ("toy-hanging", build_hanging),
                    ("toy-broken", build_broken)):
    register_env(name, build, task_names=_names, uses=("num_tasks", "max_episode_steps"),
                 task_subsets=True)
'''


@pytest.fixture
def plugin_envs(tmp_path):
    """The plug-ins above in one file, loaded here (validation) and by the workers
    (cfg.plugins); the registries are restored afterwards."""
    source = FAULTY_PLUGIN + SLOW_PLUGIN.replace("import time\n", "", 1)
    with plugin_file(tmp_path / "pipelined_test_envs.py", source) as path:
        yield path


def test_an_env_error_is_one_line_naming_the_task(plugin_envs):
    cfg = _cfg(env__name="toy-faulty", plugins=[plugin_envs], collector__workers=2)
    C.validate(cfg)
    col = PipelinedCollector(cfg)
    try:
        pids = col.worker_pids()
        col.reset()
        w = _warmup(0)
        t0 = time.perf_counter()
        with pytest.raises(CollectorError) as e:  # a RuntimeError
            for _ in range(10):
                col.collect(w, 1)
        assert time.perf_counter() - t0 < 5.0  # reported at once, not a hang
        with pytest.raises(CollectorError):  # and the collector stays failed
            col.collect(w, 1)
    finally:
        col.close()
    assert str(e.value) == ("env worker 1 (goal-2, goal-3): ValueError: simulated fault in "
                            "the goal-3 simulator")
    assert all(_gone(p) for p in pids)

    cfg = _cfg(env__name="toy-broken", plugins=[plugin_envs], collector__workers=2)
    with pytest.raises(CollectorError) as e:
        PipelinedCollector(cfg)
    assert str(e.value) == ("env worker 0 (goal-0, goal-1): building its envs: OSError: no "
                            "licence for goal-0")


def test_a_killed_worker_is_an_error_not_a_hang():
    col = PipelinedCollector(_cfg(collector__workers=2))
    try:
        pids = col.worker_pids()
        col.reset(seed=0)
        w = _warmup(0)
        col.collect(w, 3)
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.perf_counter()
        with pytest.raises(CollectorError) as e:
            for _ in range(3):  # the step in flight may have been taken before the kill
                col.collect(w, 1)
        assert time.perf_counter() - t0 < 5.0
        with pytest.raises(CollectorError):
            col.state_dict()  # a checkpoint cannot save what is lost
    finally:
        col.close()
    assert str(e.value) == ("env worker 1 (goal-2, goal-3) was killed by SIGKILL while "
                            "stepping its envs")
    assert all(_gone(p) for p in pids)


def test_a_hung_worker_times_out(plugin_envs):
    cfg = _cfg(env__name="toy-hanging", plugins=[plugin_envs], collector__workers=2)
    col = PipelinedCollector(cfg, timeout_s=1.0)
    try:
        pids = col.worker_pids()
        col.reset(seed=0)
        with pytest.raises(CollectorError) as e:
            for _ in range(10):
                col.collect(_warmup(0), 1)
        t0 = time.perf_counter()
    finally:
        col.close()
    assert time.perf_counter() - t0 < 5.0  # the stuck worker is killed, not waited for
    assert str(e.value) == ("env worker 1 (goal-2, goal-3) did not answer within 1 s while "
                            "stepping its envs (a hung env?)")
    assert all(_gone(p) for p in pids)


def test_no_process_outlives_the_collector():
    import multiprocessing as mp

    col = PipelinedCollector(_cfg(collector__workers=3))
    pids = col.worker_pids()
    assert len(pids) == 3 and not any(_gone(p) for p in pids)
    col.reset(seed=0)
    col.collect(_warmup(0), 2)  # a step is in flight when closing
    col.close()
    col.close()  # idempotent
    assert all(_gone(p) for p in pids)
    with pytest.raises(RuntimeError, match="closed"):
        col.collect(_warmup(0), 1)
    # Forgotten without close(): the finalizer ends the workers when it is collected.
    col = PipelinedCollector(_cfg())
    pids = col.worker_pids()
    del col
    gc.collect()
    assert all(_gone(p) for p in pids)
    assert not [p for p in mp.active_children() if p.name.startswith("mtrl-env-worker")]


# --------------------------------------------------------------------------------------------
# Checkpoints


def test_state_dict_resumes_exactly_with_the_pending_step(tmp_path):
    """Saved with a step in flight (acted before the update that followed), restored in new
    worker processes: the pending step comes first, then everything continues exactly."""
    cfg = _cfg(collector__workers=2)
    a = PipelinedCollector(cfg)
    try:
        a.reset(seed=1)
        agent = _agent(a, cfg)
        w = _warmup(2, agent)
        a.collect(w, 10)
        w.warm = False
        a.collect(w, 3)  # the next step is in flight now
        torch.save(a.state_dict(), tmp_path / "state.pt")
        rng = torch.get_rng_state()
        expected = [a.collect(w, k) for k in (1, 7, 30)]
    finally:
        a.close()
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # checkpoint-safe
    assert state["kind"] == "pipelined" and "pending" in state
    b = PipelinedCollector(cfg)
    try:
        b.load_state_dict(state)
        assert b.started
        torch.set_rng_state(rng)
        for exp in expected:
            _assert_same(b.collect(w, exp.num_steps), exp)
    finally:
        b.close()


def test_the_vector_collectors_state_restores_into_one_worker():
    """The vector collector's checkpointed env state fits one worker holding the whole env."""
    cfg = _cfg()
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    col = PipelinedCollector(cfg)
    try:
        vec.reset(seed=6)
        vec.collect(_warmup(0), 33)
        col.load_state_dict(vec.state_dict())
        np.testing.assert_array_equal(col.obs, vec.obs)
        _assert_same(col.collect(_warmup(4), 40), vec.collect(_warmup(4), 40))
    finally:
        col.close()
        vec.close()


def test_metaworld_state_restores_random_streams_like_the_vector_collector():
    """Meta-World cannot restore physics: new episodes on the restored generators, exactly
    those the in-process collector starts from the same env state."""
    cfg = _cfg()
    cfg.env = C.EnvConfig(name="metaworld", tasks=["reach-v3"])
    a = PipelinedCollector(cfg)
    try:
        a.reset(seed=2)
        a.collect(_warmup(0, dim=4), 5)
        state = a.state_dict()
    finally:
        a.close()
    b = PipelinedCollector(cfg)
    vec = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    try:
        b.load_state_dict(state)
        vec.load_state_dict({"env": state["envs"][0]})
        assert b.obs is not None and vec.obs is not None
        np.testing.assert_array_equal(b.obs, vec.obs)
        _assert_same(b.collect(_warmup(3, dim=4), 4), vec.collect(_warmup(3, dim=4), 4))
    finally:
        b.close()
        vec.close()


# --------------------------------------------------------------------------------------------
# Training with it


def _final_state(run_dir):
    from mtrl.checkpoint import CheckpointManager, load_file

    return load_file(CheckpointManager(run_dir / "checkpoints").latest().path)


def test_training_checkpoints_and_resumes_exactly(tmp_path):
    """A run stopped half-way and resumed (new worker processes) ends exactly where the
    uninterrupted run ends; the metadata states the lag."""
    from mtrl.runner import train

    cfg = _cfg(total_steps=800, warmup_steps=200, checkpoint__every=0)
    result = train(copy.deepcopy(cfg), tmp_path / "full")
    assert result.env_steps == 800 and not result.interrupted
    assert result.updates == 800 // 8 - 200 // 8 + 1  # as with the vector collector
    part = copy.deepcopy(cfg)
    part.total_steps = 400
    train(part, tmp_path / "part")
    resumed = train(copy.deepcopy(cfg), tmp_path / "part", resume=True)
    assert resumed.env_steps == 800
    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "part")
    assert a["collector"]["kind"] == "pipelined"
    for key, value in a["agent"]["actor"].items():
        torch.testing.assert_close(value, b["agent"]["actor"][key], rtol=0, atol=0)
    torch.testing.assert_close(a["collector"]["obs"], b["collector"]["obs"], rtol=0, atol=0)
    torch.testing.assert_close(a["rng"]["torch"], b["rng"]["torch"], rtol=0, atol=0)
    meta = json.loads((tmp_path / "full" / "metadata.json").read_text())
    assert meta["collector"]["name"] == "pipelined" and meta["collector"]["workers"] == 1
    assert meta["collector"]["policy_lag"].startswith("one update:")


def test_mtrl_train_with_the_pipelined_collector_runs_checkpoints_and_resumes(tmp_path):
    common = ["--no-progress", "--device", "cpu", "--warmup-steps", "200",
              "--agent.batch-size", "32", "--agent.actor-hidden", "16,16",
              "--agent.critic-hidden", "16,16", "--eval.every", "0", "--eval.final", "false",
              "--checkpoint.every", "400"]
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        [sys.executable, "-m", "mtrl", "train", "toy-mtsac", "--collector", "pipelined",
         "--collector.workers", "2", "--total-steps", "400", "--run-dir", str(run), *common],
        env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "in 2 env worker process(es)" in first.stdout
    assert _final_state(run)["loop"]["env_steps"] == 400
    second = subprocess.run(
        [sys.executable, "-m", "mtrl", "train", "--resume", str(run), "--total-steps", "800"],
        env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    state = _final_state(run)
    assert state["loop"]["env_steps"] == 800 and state["collector"]["kind"] == "pipelined"
    assert state["collector"]["env_ids"] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_mtrl_train_reports_an_env_error_on_one_line(tmp_path):
    plugin = tmp_path / "faulty_envs.py"
    plugin.write_text(FAULTY_PLUGIN)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mtrl", "train", "toy-mtsac", "--plugin", str(plugin),
         "--env.name", "toy-faulty", "--collector", "pipelined", "--collector.workers", "2",
         "--total-steps", "800", "--warmup-steps", "200", "--agent.batch-size", "32",
         "--device", "cpu", "--no-progress", "--eval.every", "0", "--run-dir",
         str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "mtrl: error: env worker 1 (goal-2, goal-3): ValueError: simulated fault in the "
        "goal-3 simulator")


# --------------------------------------------------------------------------------------------
# Config


def test_config_errors_of_the_pipelined_collector():
    def error(cfg) -> str:
        with pytest.raises(ConfigError) as e:
            C.validate(cfg, memory=False)
        return str(e.value)

    ppo = get_preset("toy-ppo")
    ppo.collector.name = "pipelined"
    msg = error(ppo)
    assert msg.startswith("collector.name='pipelined' does not support agent.name='mtppo' "
                          "(an on-policy agent")
    assert "mtsac" in msg and "\n" not in msg
    assert error(_cfg(collector__workers=0)) == "collector.workers=0 must be >= 1"
    assert error(_cfg(collector__workers=9)) == ("collector.workers=9 is more than the 8 "
                                                 "training env(s); every worker needs at "
                                                 "least one env")
    assert error(_cfg(collector__runners=3)).startswith(
        "collector.runners=3 is only used with collector.name='ray'")
    assert error(tiny_toy_config(collector__workers=2)) == (
        "collector.workers=2 is only used with collector.name='pipelined'; leave it at 1 for "
        "collector.name='vector'")
    C.validate(_cfg(collector__workers=8), memory=False)
    for name in ("mtsac", "distral-sac"):
        C.validate(_cfg(agent__name=name), memory=False)


def test_command_line_names_of_the_pipelined_collector():
    from mtrl.cli import split_overrides

    rest, overrides = split_overrides(["toy-mtsac", "--collector", "pipelined",
                                       "--collector.workers", "4"])
    assert rest == ["toy-mtsac"]
    cfg = get_preset("toy-mtsac")
    for key, value in overrides:
        C.set_override(cfg, key, value)
    assert (cfg.collector.name, cfg.collector.workers) == ("pipelined", 4)
    C.validate(cfg, memory=False)


# --------------------------------------------------------------------------------------------
# Learning


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_mtsac_learns_with_the_one_update_lag(tmp_path, seed):
    """The lag costs no learning: toy-mtsac (24k env steps) on the pipelined collector."""
    from mtrl.evaluation import evaluate_run
    from mtrl.runner import train

    cfg = get_preset("toy-mtsac")
    cfg.seed = seed
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    cfg.collector.name = "pipelined"
    train(cfg, tmp_path / f"s{seed}")
    ev = evaluate_run(str(tmp_path / f"s{seed}"))
    print(f"toy-mtsac, pipelined collector, seed {seed}: success {ev.result.success_mean:.2f}")
    assert ev.result.success_mean >= 0.9, ev.result.table()
