from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_toy_config

import mtrl.runner as runner
from mtrl.checkpoint import CheckpointManager, load_file, load_tensors, read_manifest, save_file
from mtrl.runner import NonFiniteLossError, ResumeError, train


def _final_state(run_dir: Path) -> dict:
    return load_file(CheckpointManager(run_dir / "checkpoints").latest().path)


def _assert_same_tensors(a, b, path="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_tensors(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_two_runs_with_one_seed_are_identical(tmp_path):
    train(tiny_toy_config(), tmp_path / "a")
    train(tiny_toy_config(), tmp_path / "b")
    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    _assert_same_tensors(a["agent"], b["agent"])
    assert a["loop"] == b["loop"]
    c = train(tiny_toy_config(seed=1), tmp_path / "c")
    assert c.env_steps == 800
    other = _final_state(tmp_path / "c")
    assert not torch.equal(other["agent"]["log_alpha"], a["agent"]["log_alpha"])


def test_resume_equals_uninterrupted_run(tmp_path):
    full = train(tiny_toy_config(), tmp_path / "full")
    assert full.env_steps == 800
    first = train(tiny_toy_config(total_steps=400), tmp_path / "part")
    ckpt = CheckpointManager(tmp_path / "part/checkpoints").latest().path
    saved = load_file(ckpt)
    assert 0 < saved["seconds"] <= first.seconds  # training time up to the checkpoint
    # Pretend the first process trained for 1000 s: the resumed run's time adds up from there.
    meta = {k: v for k, v in read_manifest(ckpt).items() if k in ("kind", "step", "replay_file")}
    save_file({**saved, "seconds": 1000.0}, ckpt, **meta)
    t0 = time.perf_counter()
    resumed = train(tiny_toy_config(), tmp_path / "part", resume=True)
    took = time.perf_counter() - t0
    assert resumed.env_steps == 800
    assert 1000.0 < resumed.seconds < 1000.0 + took
    assert 1000.0 < _final_state(tmp_path / "part")["seconds"] <= resumed.seconds
    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "part")
    _assert_same_tensors(a["agent"], b["agent"])
    _assert_same_tensors(a["rng"], b["rng"])
    _, ra = load_tensors(tmp_path / "full/checkpoints/replay_000000000800.bin")
    _, rb = load_tensors(tmp_path / "part/checkpoints/replay_000000000800.bin")
    _assert_same_tensors(ra, rb)
    assert ra["data"].shape[1] == 800 // 4  # only the filled part (200 per task) was written
    meta = json.loads((tmp_path / "part/metadata.json").read_text())
    assert meta["resumes"][0]["env_steps"] == 400


def test_new_run_refuses_to_overwrite_existing_run(tmp_path):
    train(tiny_toy_config(total_steps=200, warmup_steps=100), tmp_path / "r")
    before = sorted(p.name for p in (tmp_path / "r/checkpoints").iterdir())
    with pytest.raises(ResumeError, match="already holds a run"):
        train(tiny_toy_config(), tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r/checkpoints").iterdir()) == before


def test_non_finite_loss_stops_with_name_and_step_and_keeps_last_good(tmp_path, monkeypatch):
    real_make_env = runner.make_env

    def poisoned(cfg, *, seed, evaluation=False):
        env = real_make_env(cfg, seed=seed, evaluation=evaluation)
        if evaluation:
            return env
        step = env.step
        calls = {"n": 0}

        def bad_step(action):
            obs, rew, term, trunc, info = step(action)
            calls["n"] += 1
            if calls["n"] >= 70:  # after the checkpoint at env step 400 (= 50 vector steps)
                rew = rew * np.nan
            return obs, rew, term, trunc, info

        env.step = bad_step
        return env

    monkeypatch.setattr(runner, "make_env", poisoned)
    with pytest.raises(NonFiniteLossError) as e:
        train(tiny_toy_config(), tmp_path / "nan")
    msg = str(e.value)
    assert "loss/critic" in msg and "env step" in msg and "ckpt_000000000400.pt" in msg
    latest = CheckpointManager(tmp_path / "nan/checkpoints").latest()
    assert latest.step == 400
    state = load_file(latest.path)
    assert all(torch.isfinite(v).all() for v in state["agent"]["critic"].values())


def test_resume_of_missing_or_incompatible_run(tmp_path):
    with pytest.raises(ResumeError, match="does not exist"):
        train(tiny_toy_config(), tmp_path / "nope", resume=True)
    train(tiny_toy_config(total_steps=200, warmup_steps=100), tmp_path / "r")
    bigger = tiny_toy_config(agent__critic_hidden=[32, 32])
    with pytest.raises(ResumeError, match="critic"):
        runner.check_resume_compatible(runner.load_run_config(tmp_path / "r"), bigger,
                                       tmp_path / "r")


def test_eval_json_of_a_trained_run(tmp_path):
    from mtrl.evaluation import evaluate_run

    train(tiny_toy_config(), tmp_path / "r")
    ev = evaluate_run(str(tmp_path / "r"), episodes_per_task=3)
    data = ev.to_json()
    assert set(data) >= {"run_dir", "checkpoint", "step", "episodes_per_task", "success_mean",
                         "return_mean", "tasks"}
    assert data["step"] == 800 and data["episodes_per_task"] == 3
    assert set(data["tasks"]) == {"goal-0", "goal-1", "goal-2", "goal-3"}
    for t in data["tasks"].values():
        assert set(t) == {"success", "return", "episodes"} and t["episodes"] == 3
    # deterministic: the same numbers again
    assert evaluate_run(str(tmp_path / "r"), episodes_per_task=3).to_json() == data


def test_toy_mtsac_preset_learns(tmp_path):
    """The full toy-mtsac preset (about half a minute here) reaches >= 0.9 mean success."""
    from mtrl.presets import get_preset

    cfg = get_preset("toy-mtsac")
    cfg.log.progress_bar = False
    cfg.device = "cpu"
    result = train(cfg, tmp_path / "toy")
    assert result.final_eval is not None
    assert result.final_eval.success_mean >= 0.9, result.final_eval.table()


# ---------------------------------------------------------------------------- processes


def _mtrl(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtrl", *args]


def _start_long_run(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = _mtrl("train", "toy-mtsac", "--run-dir", str(run_dir), "--total-steps", "10000000",
                "--no-progress", "--device", "cpu", "--checkpoint.every", "400",
                "--warmup-steps", "200", "--agent.batch-size", "32",
                "--agent.actor-hidden", "16,16", "--agent.critic-hidden", "16,16",
                "--eval.every", "0", "--eval.final", "false")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _wait_for_checkpoints(run_dir: Path, n: int, proc: subprocess.Popen, timeout=120.0) -> None:
    t0 = time.time()
    while len(CheckpointManager(run_dir / "checkpoints").list()) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.2)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "r"
    proc = _start_long_run(run_dir)
    _wait_for_checkpoints(run_dir, 1, proc)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted at env step" in err and "Traceback" not in err
    assert "--resume" in err
    latest = CheckpointManager(run_dir / "checkpoints").latest()
    state = load_file(latest.path)
    assert state["loop"]["env_steps"] == latest.step > 400


def test_kill_9_then_resume_continues_from_last_checkpoint(tmp_path):
    run_dir = tmp_path / "r"
    proc = _start_long_run(run_dir)
    _wait_for_checkpoints(run_dir, 2, proc)
    proc.kill()
    proc.wait()
    mgr = CheckpointManager(run_dir / "checkpoints")
    last = mgr.latest()
    assert load_file(last.path)["loop"]["env_steps"] == last.step  # intact
    target = last.step + 400
    res = subprocess.run(_mtrl("train", "--resume", str(run_dir), "--total-steps", str(target)),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["resumes"][-1]["env_steps"] == last.step
    assert mgr.latest().step == target
    final = load_file(mgr.latest().path)
    assert final["loop"]["env_steps"] == target
    # the replay buffer came back: it holds everything collected (capacity permitting)
    _, replay = load_tensors(run_dir / "checkpoints" / mgr.latest().manifest["replay_file"])
    assert int(replay["size"].sum()) == target


def test_cli_resume_keeps_the_config(tmp_path):
    cfg = copy.deepcopy(tiny_toy_config(total_steps=400))
    train(cfg, tmp_path / "r")
    res = subprocess.run(_mtrl("train", "--resume", str(tmp_path / "r"), "--total-steps", "800",
                               "--agent.batch-size", "64"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "agent.batch_size: run has 32, requested 64" in res.stderr
    # nothing was overwritten
    assert CheckpointManager(tmp_path / "r/checkpoints").latest().step == 400


# ---------------------------------------------------------------------------- progress


def test_train_log_follows_the_run_with_eta_and_evaluation_progress(tmp_path, capsys):
    cfg = tiny_toy_config(eval__every=400, eval__final=True)
    train(cfg, tmp_path / "r")
    lines = (tmp_path / "r" / "train.log").read_text().splitlines()
    body = [ln.split("  ", 1)[1] for ln in lines]  # drop the time stamps
    assert body[0].startswith("start: toy-mtsac (mtsac on toy-reach, 4 task(s), 8 env(s)), "
                              "env step 0 of 800")
    steps = [b for b in body if b.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["200/800", "400/800", "600/800", "800/800"]
    assert all(" ETA " in s and "steps/s" in s for s in steps)
    assert steps[-1].endswith("ETA 0s")
    evals = [b for b in body if b.startswith("evaluation at env step")]
    assert [e.split()[4] for e in evals] == ["0:", "400:", "800:"]  # the untrained policy first
    assert body[-1].startswith("done at env step 800 after ")
    # without a progress bar the lines also go to stdout (what --seeds writes to its logs)
    assert "step 800/800 (100.0%)" in capsys.readouterr().out


def test_evaluation_reports_episodes_done():
    from mtrl.envs import make_env
    from mtrl.evaluation import EvaluationInterrupted, evaluate

    cfg = tiny_toy_config()
    env = make_env(cfg.env, seed=0, evaluation=True)

    class Zero:
        def act(self, obs, task_id, deterministic=True):
            return np.zeros((obs.shape[0], 2), dtype=np.float32)

    seen: list[tuple[int, int]] = []
    evaluate(Zero(), env, 3, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (12, 12) and all(t == 12 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    calls = []
    with pytest.raises(EvaluationInterrupted):
        evaluate(Zero(), env, 3, should_stop=lambda: calls.append(1) or len(calls) > 5)
    assert len(calls) == 6  # stopped at the sixth vector step, not after 12 episodes
    env.close()


def test_on_policy_runs_announce_the_whole_rollouts_they_will_take(tmp_path):
    from mtrl.presets import get_preset

    cfg = get_preset("toy-a2c")  # 16 envs, rollouts of n_steps vector steps
    cfg.device, cfg.log.progress_bar, cfg.eval.final, cfg.eval.every = "cpu", False, False, 0
    per_rollout = cfg.agent.a2c.n_steps * 16
    cfg.total_steps = per_rollout * 3 + 1  # one env step into a fourth rollout
    cfg.log.every = per_rollout
    result = train(cfg, tmp_path / "r")
    assert result.env_steps == per_rollout * 4
    body = [ln.split("  ", 1)[1] for ln in (tmp_path / "r" / "train.log").read_text().splitlines()]
    assert f"env step 0 of {per_rollout * 4:,}," in body[0]
    assert body[-2].startswith(f"step {per_rollout * 4:,}/{per_rollout * 4:,} (100.0%)")


def _eval_steps(run_dir: Path) -> list[int]:
    return sorted(json.loads(f.read_text())["step"] for f in (run_dir / "eval").glob("step_*.json"))


def test_first_evaluation_is_of_the_untrained_policy_at_step_0(tmp_path):
    """Curves start where learning starts: a new run with periodic evaluations evaluates at env
    step 0; a resume does not evaluate step 0 again; ``eval.at_start false`` turns it off; the
    step-0 evaluation does not change the training that follows (RNG states restored)."""
    def cfg(**kw):
        return tiny_toy_config(eval__every=400, eval__final=True, **kw)

    train(cfg(total_steps=400), tmp_path / "a")
    assert _eval_steps(tmp_path / "a") == [0, 400]
    first = json.loads((tmp_path / "a/eval/step_000000000000.json").read_text())
    assert first["episodes_per_task"] == 2 and 0.0 <= first["success_mean"] <= 1.0
    train(cfg(), tmp_path / "a", resume=True)
    assert _eval_steps(tmp_path / "a") == [0, 400, 800]
    train(cfg(eval__at_start=False, total_steps=400), tmp_path / "b")
    assert _eval_steps(tmp_path / "b") == [400]

    def agent_at_400(run: str) -> dict:
        path = tmp_path / run / "checkpoints/ckpt_000000000400.pt"
        return torch.load(path, weights_only=True)["agent"]

    _assert_same_tensors(agent_at_400("a"), agent_at_400("b"))


def test_collect_steps_keeps_the_updates_per_env_step(tmp_path):
    """collect_steps=5: chunks of 5 vector steps, 5 updates after each (the warm-up's last
    chunk: one, for its last step), so as many updates for the same env steps as with one
    step per iteration; each chunk is acted by one behaviour (uniform during the warm-up)."""
    from mtrl.agents.offpolicy import UniformWarmup

    calls: list[tuple[int, bool]] = []
    collect = runner.VectorCollector.collect

    def spy(self, policy, n):
        if isinstance(policy, UniformWarmup):
            calls.append((n, policy.warm))
        return collect(self, policy, n)

    one = train(tiny_toy_config(checkpoint__every=0), tmp_path / "one")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner.VectorCollector, "collect", spy)
        five = train(tiny_toy_config(collect_steps=5, checkpoint__every=0), tmp_path / "five")
    assert one.env_steps == five.env_steps == 800
    assert one.updates == five.updates == 800 // 8 - 200 // 8 + 1
    # 8 envs: the warm-up is 25 vector steps; chunks start at 0, 5, ..., 95.
    assert calls == [(5, True)] * 5 + [(5, False)] * 15
    from mtrl import config as C
    from mtrl.errors import ConfigError

    with pytest.raises(ConfigError, match="collect_steps=0 must be"):
        C.validate(tiny_toy_config(collect_steps=0), memory=False)
    cfg = tiny_toy_config(collect_steps=4)
    cfg.agent.name = "mta2c"
    with pytest.raises(ConfigError, match="collect_steps=4 is for the off-policy agents"):
        C.validate(cfg, memory=False)
