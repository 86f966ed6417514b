"""benchmarks/sac_vs_sb3_learning.py: long comparison runs save their state at every evaluation
and a run stopped (kill -9) continues from its last save."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mtrl.seeding import rng_state, set_rng_state

pytest.importorskip("stable_baselines3")
pytest.importorskip("metaworld")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():  # the benchmark module
    sys.path.insert(0, str(BENCH))
    try:
        import sac_vs_sb3_learning

        yield sac_vs_sb3_learning
    finally:
        sys.path.remove(str(BENCH))


def _small_sac(seed: int):
    from stable_baselines3 import SAC

    return SAC("MlpPolicy", "Pendulum-v1", learning_starts=100, batch_size=32, seed=seed,
               policy_kwargs={"net_arch": [32, 32]}, device="cpu", buffer_size=5000)


def _flat(model) -> dict[str, torch.Tensor]:
    out = {f"policy.{k}": v.clone() for k, v in model.policy.state_dict().items()}
    out["log_ent_coef"] = model.log_ent_coef.detach().clone()
    return out


def test_sb3_state_round_trip_continues_exactly(bench, tmp_path):
    """Saved at step 300 and loaded into a freshly built model, SB3's SAC has the same
    networks, temperature, optimizer moments, replay contents and counters, and the next
    gradient steps (replay sampling and policy noise from the restored generators) give the
    same parameters as the model that was saved."""
    model = _small_sac(0)
    model.learn(300)
    curve = {200: (0.5, 10.0, {"t": 0.5})}
    saver = bench._SB3State(tmp_path / "sb3")
    saver.save(model, curve, [100], 12.5)
    assert (tmp_path / "sb3" / "latest").read_text() == "ckpt-300"
    saved_rng = rng_state()

    fresh = _small_sac(1)  # another seed: everything must come from the save
    got_curve, resumed, seconds = saver.load(fresh, saver.latest())
    restored_rng = rng_state()
    assert torch.equal(restored_rng["torch"], saved_rng["torch"])
    assert torch.equal(restored_rng["numpy"]["keys"], saved_rng["numpy"]["keys"])
    assert got_curve == curve and resumed == [100] and seconds == 12.5
    assert (fresh.num_timesteps, fresh._n_updates, fresh._episode_num) == \
        (model.num_timesteps, model._n_updates, model._episode_num) == (300, 200, 1)
    n = model.replay_buffer.pos
    for k in bench._SB3_BUFFER:
        np.testing.assert_array_equal(getattr(fresh.replay_buffer, k)[:n],
                                      getattr(model.replay_buffer, k)[:n])
    assert fresh.replay_buffer.pos == n == 300
    a, b = model.actor.optimizer.state_dict(), fresh.actor.optimizer.state_dict()
    for i in a["state"]:
        torch.testing.assert_close(a["state"][i]["exp_avg_sq"], b["state"][i]["exp_avg_sq"],
                                   rtol=0, atol=0)
    before = _flat(fresh)
    for k, v in _flat(model).items():
        torch.testing.assert_close(before[k], v, rtol=0, atol=0)

    from stable_baselines3.common.logger import configure

    fresh.set_logger(configure(None, []))  # learn() would set one
    model.train(gradient_steps=5, batch_size=32)
    set_rng_state(restored_rng)  # the two models share the global generators
    fresh.train(gradient_steps=5, batch_size=32)
    after_model, after_fresh = _flat(model), _flat(fresh)
    assert not torch.equal(after_model["log_ent_coef"], before["log_ent_coef"])
    for k, v in after_model.items():
        torch.testing.assert_close(after_fresh[k], v, rtol=0, atol=0)

    # A newer save replaces the older one; nothing else is left behind.
    model.learn(100, reset_num_timesteps=False)
    saver.save(model, curve, [100], 13.0)
    assert sorted(p.name for p in (tmp_path / "sb3").iterdir()) == ["ckpt-400", "latest"]


def test_sb3_state_refuses_a_bad_latest_file(bench, tmp_path):
    (tmp_path / "latest").write_text("../../etc")
    with pytest.raises(SystemExit, match="names no saved state"):
        bench._SB3State(tmp_path).latest()
    (tmp_path / "latest").write_text("ckpt-5")
    (tmp_path / "ckpt-5").mkdir()
    (tmp_path / "ckpt-5" / "state.pt").write_bytes(b"not a torch file")
    (tmp_path / "ckpt-5" / "replay.npz").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"cannot resume from .*ckpt-5"):
        bench._SB3State(tmp_path).load(_small_sac(0), tmp_path / "ckpt-5")


def _saved_seconds(bench, side: str, d: Path) -> float:
    """The training seconds the run's newest save holds."""
    if side == "mtrl":
        from mtrl.checkpoint import load_file
        from mtrl.rundir import RunDir

        return float(load_file(RunDir(d / "run").checkpoints().latest().path)["seconds"])
    st, _ = bench._SB3State.read(bench._SB3State(d / "sb3").latest())
    return float(st["seconds"])


def _saved_step(bench, side: str, d: Path) -> int | None:
    if side == "mtrl":
        from mtrl.rundir import RunDir

        last = RunDir(d / "run").checkpoints().latest()
        return None if last is None else last.step
    latest = bench._SB3State(d / "sb3").latest()
    return None if latest is None else int(latest.name.split("-")[1])


@pytest.mark.parametrize("side", ["mtrl", "sb3"])
def test_killed_run_resumes_from_its_last_evaluation(bench, tmp_path, side, capsys):
    """A real run process is killed (SIGKILL) after its first save; while it ran, a second
    writer was refused; started again, the run continues from the save, evaluates at every
    step of the plan once, and records where it resumed. Between evaluations the SB3 side
    prints its progress as often as mtrl's log does (5 lines per evaluation period)."""
    job = bench.Job(side, "reach-v3", 0, steps=1500, warmup=500, batch_size=32, eval_every=500,
                eval_episodes=1, threads=1)
    work = tmp_path / "work"
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); import sac_vs_sb3_learning as bench;"
            f" from pathlib import Path; bench.run_job(bench.{job!r}, Path({str(work)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    d = bench.job_dir(work, job)
    try:
        deadline = time.monotonic() + 300
        while _saved_step(bench, side, d) is None:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no save within 300 s"
            time.sleep(0.2)
        with pytest.raises(SystemExit, match="in use by PID"):
            bench.run_job(job, work)
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        proc.stderr.close()
    step = _saved_step(bench, side, d)
    assert step in (500, 1000)
    so_far = bench.progress(work, job)
    assert set(so_far) >= {500, step} and all(0.0 <= v <= 1.0 for v in so_far.values())
    before = _saved_seconds(bench, side, d)
    t0 = time.perf_counter()
    capsys.readouterr()
    res = bench.run_job(job, work)
    took = time.perf_counter() - t0
    if side == "sb3":
        shown = [int(m.replace(",", "")) for m in
                 re.findall(r"sb3 reach-v3 seed 0: step ([\d,]+)/1,500  \d+ steps/s  ETA ",
                            capsys.readouterr().out)]
        assert shown == [n for n in range(step + 100, 1500, 100) if n % 500]
    assert res["resumed_at"] == [step]
    # Its time counts both processes: the killed one's up to its save, and this one's.
    assert 0 < before < res["minutes"] * 60 < before + took
    assert sorted(int(k) for k in res["success"]) == [500, 1000, 1500]
    json.dumps(res)  # goes into the results file
