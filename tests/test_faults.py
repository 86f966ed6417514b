"""Faults injected in real processes: a second writer, resumes after corruption, missing and
forged files, write errors, signals during evaluation, kill -9 at random moments.

Each test runs ``python -m mtrl`` in a subprocess and asserts the exit status, a one-line
message without a traceback, and which files exist afterwards with which hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtrl.checkpoint import CheckpointManager, load_file, manifest_path

TINY = ("--no-progress", "--device", "cpu", "--warmup-steps", "200", "--agent.batch-size", "32",
        "--agent.actor-hidden", "16,16", "--agent.critic-hidden", "16,16")
NO_EVAL = ("--eval.every", "0", "--eval.final", "false")


def _mtrl(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtrl", *args]


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(_mtrl(*args), capture_output=True, text=True, timeout=timeout)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): _sha(p) for p in sorted(directory.rglob("*"))
            if p.is_file()}


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("mtrl: error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def _train(run_dir: Path, total: int, *extra: str) -> subprocess.CompletedProcess:
    res = _run("train", "toy-mtsac", "--run-dir", str(run_dir), "--total-steps", str(total),
               "--checkpoint.every", "200", *TINY, *NO_EVAL, *extra)
    assert res.returncode == 0, res.stderr
    return res


def _start_long_run(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = _mtrl("train", "toy-mtsac", "--run-dir", str(run_dir), "--total-steps", "10000000",
                "--checkpoint.every", "400", *TINY, *NO_EVAL, *extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.1)


def _ckpts(run_dir: Path) -> CheckpointManager:
    return CheckpointManager(run_dir / "checkpoints")


# ---------------------------------------------------------------------------- one writer


def test_a_run_directory_has_one_writer(tmp_path):
    run = tmp_path / "r"
    proc = _start_long_run(run)
    try:
        _wait_for(lambda: len(_ckpts(run).list()) >= 1, proc)
        config_before = _sha(run / "config.yaml")
        for args in (("train", "toy-mtsac", "--run-dir", str(run), *TINY),
                     ("train", "--resume", str(run))):
            res = _run(*args)
            assert res.returncode == 2, res.stderr
            line = _one_line_error(res)
            assert f"PID {proc.pid} on {socket.gethostname()}" in line, line
            assert "in use" in line
        assert _sha(run / "config.yaml") == config_before
        assert proc.poll() is None  # the owner was not disturbed
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # released on exit: the run resumes
    last = _ckpts(run).latest().step
    res = _run("train", "--resume", str(run), "--total-steps", str(last + 200))
    assert res.returncode == 0, res.stderr


def test_a_killed_owner_releases_the_run(tmp_path):
    run = tmp_path / "r"
    proc = _start_long_run(run)
    _wait_for(lambda: len(_ckpts(run).list()) >= 1, proc)
    proc.kill()
    proc.wait()
    last = _ckpts(run).latest().step
    res = _run("train", "--resume", str(run), "--total-steps", str(last + 200))
    assert res.returncode == 0, res.stderr


def test_same_process_second_trainer_is_refused(tmp_path):
    from mtrl.rundir import RunLock, RunLockedError

    with RunLock(tmp_path / "r"), pytest.raises(RunLockedError, match="this process"):
        RunLock(tmp_path / "r").acquire()
    RunLock(tmp_path / "r").acquire().release()  # released by the context manager


# ---------------------------------------------------------------------------- recovery


def test_resume_from_older_checkpoint_after_corruption_loses_nothing(tmp_path):
    run = tmp_path / "r"
    _train(run, 800)  # checkpoints 400, 600, 800 (+ replay_800)
    ck = run / "checkpoints"
    bad = ck / "ckpt_000000000800.pt"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    before = _hashes(ck)

    res = _run("train", "--resume", str(run), "--total-steps", "1000")
    assert res.returncode == 2
    line = _one_line_error(res)
    assert "ckpt_000000000800.pt is corrupt" in line and "ckpt_000000000600.pt" in line
    assert _hashes(ck) == before  # a refused resume touches nothing

    res = _run("train", "--resume", str(run), "--checkpoint", str(ck / "ckpt_000000000600.pt"),
               "--total-steps", "1000")
    assert res.returncode == 0, res.stderr
    assert "moved to" in res.stderr and "Traceback" not in res.stderr
    aside = [d for d in ck.iterdir() if d.is_dir() and d.name.startswith("superseded-")]
    assert len(aside) == 1
    # every file of the abandoned timeline is kept, byte for byte
    for name in ("ckpt_000000000800.pt", "ckpt_000000000800.json", "replay_000000000800.bin",
                 "replay_000000000800.json"):
        assert _sha(aside[0] / name) == before[name], name
    # the new timeline: 600 (resumed from), 800, 1000, and the newest replay
    assert [c.step for c in _ckpts(run).list()] == [600, 800, 1000]
    assert load_file(ck / "ckpt_000000001000.pt")["loop"]["env_steps"] == 1000
    assert (ck / "replay_000000001000.bin").exists()
    assert _hashes(ck)["ckpt_000000000600.pt"] == before["ckpt_000000000600.pt"]


def test_checkpoint_without_manifest_is_kept_and_can_be_adopted(tmp_path):
    run = tmp_path / "r"
    _train(run, 800)
    ck = run / "checkpoints"
    orphan = ck / "ckpt_000000000800.pt"
    manifest_path(orphan).unlink()  # e.g. killed between the .pt and its manifest
    orphan_sha = _sha(orphan)

    # adopt it explicitly: verified by loading, manifest written, resumed from step 800
    res = _run("train", "--resume", str(run), "--checkpoint", str(orphan),
               "--total-steps", "1000")
    assert res.returncode == 0, res.stderr
    assert "adopted" in res.stderr
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["resumes"][-1]["env_steps"] == 800

    # without --checkpoint: the newest verified one is resumed, the orphan is never overwritten
    run2 = tmp_path / "r2"
    _train(run2, 800)
    ck2 = run2 / "checkpoints"
    orphan2 = ck2 / "ckpt_000000000800.pt"
    manifest_path(orphan2).unlink()
    orphan2_sha = _sha(orphan2)
    res = _run("train", "--resume", str(run2), "--total-steps", "1000")
    assert res.returncode == 0, res.stderr
    assert "ckpt_000000000800.pt has no valid manifest" in res.stderr
    aside = next(d for d in ck2.iterdir() if d.name.startswith("superseded-"))
    assert _sha(aside / "ckpt_000000000800.pt") == orphan2_sha
    assert json.loads((run2 / "metadata.json").read_text())["resumes"][-1]["env_steps"] == 600
    assert orphan_sha  # first run's file was adopted in place
    assert _sha(orphan) == orphan_sha


@pytest.mark.parametrize("extra_steps", [0, 200])
def test_missing_replay_resumes_with_an_empty_buffer_and_saves(tmp_path, extra_steps):
    run = tmp_path / "r"
    _train(run, 600)
    ck = run / "checkpoints"
    for p in ck.glob("replay_*"):
        p.unlink()
    res = _run("train", "--resume", str(run), "--total-steps", str(600 + extra_steps))
    assert res.returncode == 0, res.stderr
    assert "empty buffer" in res.stderr and "Traceback" not in res.stderr
    latest = _ckpts(run).latest()
    assert latest.step == 600 + extra_steps
    assert load_file(latest.path)["loop"]["env_steps"] == latest.step
    assert (ck / latest.manifest["replay_file"]).exists()


# ---------------------------------------------------------------------------- forged files


def _forge(path: Path, edit) -> None:
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def test_forged_replay_shape_is_refused_without_allocating(tmp_path):
    run = tmp_path / "r"
    _train(run, 400)
    rjson = run / "checkpoints" / "replay_000000000400.json"

    def huge(m):
        m["layout"]["data"]["shape"] = [4, 10**11, 10**4]
        m["layout"]["data"]["nbytes"] = 4 * 10**11 * 10**4 * 4

    _forge(rjson, huge)
    t0 = time.time()
    res = _run("train", "--resume", str(run), "--total-steps", "600")
    assert res.returncode == 2
    line = _one_line_error(res)
    assert "replay_000000000400.json" in line and "does not fit" in line
    assert time.time() - t0 < 60


def test_replay_manifest_without_a_field_is_refused(tmp_path):
    run = tmp_path / "r"
    _train(run, 400)
    _forge(run / "checkpoints" / "replay_000000000400.json", lambda m: m.pop("filled"))
    res = _run("train", "--resume", str(run), "--total-steps", "600")
    assert res.returncode == 2
    assert "'filled'" in _one_line_error(res)


def test_manifest_paths_stay_inside_the_run(tmp_path):
    run = tmp_path / "r"
    _train(run, 400)
    ck = run / "checkpoints"
    outside = tmp_path / "x.bin"
    outside.write_bytes((ck / "replay_000000000400.bin").read_bytes())
    (tmp_path / "x.json").write_text((ck / "replay_000000000400.json").read_text())
    ckpt = ck / "ckpt_000000000400.pt"
    _forge(manifest_path(ckpt), lambda m: m.update(replay_file="../../x.bin"))
    res = _run("train", "--resume", str(run), "--checkpoint", str(ckpt), "--total-steps", "600")
    assert res.returncode == 2
    line = _one_line_error(res)
    assert "replay_file '../../x.bin'" in line
    # without --checkpoint the forged one counts as unverified: set aside, and the run resumes
    # from the newest valid checkpoint (200); the outside file is never touched
    outside_sha = _sha(outside)
    res = _run("train", "--resume", str(run), "--total-steps", "600")
    assert res.returncode == 0, res.stderr
    assert "ckpt_000000000400.pt has no valid manifest" in res.stderr
    assert json.loads((run / "metadata.json").read_text())["resumes"][-1]["env_steps"] == 200
    assert _sha(outside) == outside_sha


# ---------------------------------------------------------------------------- write errors


def test_write_error_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """RLIMIT_FSIZE makes every write past N bytes fail with EFBIG, the way a full disk fails
    with ENOSPC: the first checkpoint that outgrows N cannot be written."""
    run = tmp_path / "r"
    _train(run, 400)
    ck = run / "checkpoints"
    limit = (ck / "replay_000000000400.bin").stat().st_size + 2048
    before = _hashes(ck)
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from mtrl.cli import main\n"
        f"sys.exit(main(['train', '--resume', {str(run)!r}, '--total-steps', '1200']))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 1, res.stderr
    line = _one_line_error(res)
    assert "cannot write" in line and "replay_000000000600.bin" in line
    assert f"resume with: mtrl train --resume {run}" in line
    assert not list(ck.glob(".*tmp*"))  # no orphan temporaries
    after = _hashes(ck)
    for name, digest in before.items():
        assert after[name] == digest, name
    assert _ckpts(run).latest().step == 400
    res = _run("train", "--resume", str(run), "--total-steps", "600")
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------- signals


def test_signal_during_final_evaluation_stops_within_seconds(tmp_path):
    run = tmp_path / "r"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # 5000 episodes per task: minutes of evaluation if it were not interrupted
    proc = subprocess.Popen(
        _mtrl("train", "toy-mtsac", "--run-dir", str(run), "--total-steps", "400", *TINY,
              "--eval.every", "0", "--eval.final", "true", "--eval.episodes-per-task", "5000"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # the training state is saved before the final evaluation starts
    _wait_for(lambda: any(c.step == 400 for c in _ckpts(run).list()), proc)
    time.sleep(1.0)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 10, err
    assert proc.returncode == 0, err
    assert "abandoned" in err and "Traceback" not in err and "--resume" in err
    latest = _ckpts(run).latest()
    assert latest.step == 400 and load_file(latest.path)["loop"]["env_steps"] == 400


@pytest.mark.slow
def test_kill_9_at_random_moments_always_resumes_from_newest_complete(tmp_path):
    """20 trials: kill -9 after a random delay (often in the middle of a checkpoint write,
    which happens every 40 env steps here), then resume from the newest complete checkpoint."""
    rng = random.Random(0)
    for trial in range(20):
        run = tmp_path / f"r{trial}"
        proc = subprocess.Popen(
            _mtrl("train", "toy-mtsac", "--run-dir", str(run), "--total-steps", "10000000",
                  "--checkpoint.every", "40", *TINY, *NO_EVAL),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda run=run: len(_ckpts(run).list()) >= 1, proc)
        time.sleep(rng.uniform(0.0, 3.0))
        proc.kill()
        proc.wait()
        mgr = _ckpts(run)
        newest = mgr.latest()
        assert load_file(newest.path)["loop"]["env_steps"] == newest.step  # verifies
        res = _run("train", "--resume", str(run), "--total-steps", str(newest.step + 40))
        assert res.returncode == 0, (trial, res.stderr)
        assert json.loads((run / "metadata.json").read_text())["resumes"][-1]["env_steps"] \
            == newest.step
        assert mgr.latest().step == newest.step + 40
