"""Reports (IQM, bootstrap CIs), plots and seed sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_toy_config

from mtrl.analysis import build_report, iqm, load_run, mean_score, stratified_bootstrap_ci
from mtrl.cli import main
from mtrl.runner import train


def test_iqm_by_hand():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # drop 1,2 and 7,8: mean(3,4,5,6)
    assert iqm(np.array([5.0, 1.0, 3.0, 2.0, 4.0])) == pytest.approx(3.0)  # drop 1 each end
    assert iqm(np.array([[0.0, 1.0], [1.0, 1.0]])) == pytest.approx(1.0)  # middle two of 0,1,1,1
    assert iqm(np.array([7.0])) == 7.0
    x = np.array([0.0, 0.0, 0.0, 100.0, 1.0, 1.0, 1.0, 1.0])  # an outlier does not move it
    assert iqm(x) == pytest.approx(0.75)  # sorted 0,0,[0,1,1,1],1,100


def test_stratified_bootstrap_by_hand():
    # Two runs of one task scoring 0 and 1: resampled means are 0, 0.5, 1 with probabilities
    # 1/4, 1/2, 1/4, so the 95% percentile interval is [0, 1].
    lo, hi = stratified_bootstrap_ci(np.array([[0.0], [1.0]]), mean_score, reps=4000)
    assert (lo, hi) == (0.0, 1.0)
    # Identical runs: no uncertainty.
    same = np.tile(np.array([[0.2, 0.9, 0.4]]), (3, 1))
    assert stratified_bootstrap_ci(same, iqm) == pytest.approx((iqm(same), iqm(same)))
    # Against a literal loop with the same draws: runs are resampled within each task.
    s = np.random.default_rng(1).random((4, 3))
    reps = 50
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 4, size=(reps, 4, 3))
    stats = []
    for r in range(reps):
        m = np.empty((4, 3))
        for task in range(3):
            for run in range(4):
                m[run, task] = s[idx[r, run, task], task]
        stats.append(iqm(m))
    expect = np.percentile(stats, [2.5, 97.5])
    got = stratified_bootstrap_ci(s, iqm, reps=reps, seed=7)
    np.testing.assert_allclose(got, expect)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    base = tmp_path_factory.mktemp("seeds")
    dirs = []
    for seed in range(3):
        cfg = tiny_toy_config(seed=seed)
        cfg.eval.every = 400
        cfg.eval.final = True
        train(cfg, base / f"seed{seed}")
        dirs.append(base / f"seed{seed}")
    return dirs


def test_report_schema_and_numbers(three_seeds, tmp_path, capsys):
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    assert main(["report", *map(str, three_seeds), "--json", str(out), "--markdown", str(md)]) == 0
    printed = capsys.readouterr().out
    assert "| toy-mtsac | 3 |" in printed and "IQM" in printed
    rep = json.loads(out.read_text())
    assert set(rep) == {"protocol", "statistics", "methods"}
    m = rep["methods"]["toy-mtsac"]
    assert set(m) >= {"runs", "seeds", "num_runs", "success_mean", "success_mean_ci95", "iqm",
                      "iqm_ci95", "per_run_mean", "tasks", "metadata"}
    assert m["seeds"] == [0, 1, 2] and m["num_runs"] == 3
    evals = [json.loads(sorted((d / "eval").glob("step_*.json"))[-1].read_text())
             for d in three_seeds]
    scores = np.array([[e["tasks"][f"goal-{k}"]["success"] for k in range(4)] for e in evals])
    assert m["success_mean"] == pytest.approx(scores.mean())
    assert m["iqm"] == pytest.approx(iqm(scores))
    lo, hi = m["iqm_ci95"]
    assert lo <= m["iqm"] + 1e-9 and m["iqm"] - 1e-9 <= hi
    assert m["tasks"]["goal-2"]["per_run"] == pytest.approx(list(scores[:, 2]))
    assert m["metadata"]["episode_length"] == 50
    assert m["metadata"]["steps_per_task"] == 800 // 4
    assert md.read_text().startswith("| method |")


def test_report_groups_methods_and_refuses_mismatched_tasks(three_seeds):
    runs = [load_run(three_seeds[0], method="a"), load_run(three_seeds[1], method="b")]
    rep = build_report(runs, reps=200)
    assert set(rep["methods"]) == {"a", "b"}
    odd = load_run(three_seeds[2], method="a")
    odd.tasks = {"other": 1.0}
    with pytest.raises(ValueError, match="different tasks"):
        build_report([runs[0], odd], reps=200)


def test_plot_writes_a_readable_png_with_one_curve_per_panel_and_method(three_seeds, tmp_path):
    from PIL import Image

    from mtrl.plotting import plot_runs

    out = tmp_path / "curves.png"
    info = plot_runs(three_seeds, out)
    assert info["panels"] == ["mean over tasks", "goal-0", "goal-1", "goal-2", "goal-3"]
    assert info["methods"] == ["toy-mtsac"] and info["curves"] == 5
    with Image.open(out) as im:
        # 5 panels in a grid of at most 4 columns (3.6 inches wide at 110 dpi), 2 rows of
        # panels at least 300 px high
        assert im.size[0] == round(4 * 3.6 * 110) and im.size[1] >= 2 * 300
        pixels = np.asarray(im.convert("L"))
        assert pixels.std() > 10  # not a blank image
    two = plot_runs([*three_seeds[:2], three_seeds[2]], tmp_path / "two.png",
                    methods=["a", "a", "b"])
    assert two["methods"] == ["a", "b"] and two["curves"] == 10


def test_plot_and_report_errors_name_the_problem(tmp_path, capsys, three_seeds):
    assert main(["plot", str(three_seeds[0]), "--out", str(tmp_path / "x.png"),
                 "--metric", "reward"]) == 2
    assert "--metric='reward'" in capsys.readouterr().err
    cfg = tiny_toy_config()
    train(cfg, tmp_path / "noeval")
    assert main(["report", str(tmp_path / "noeval")]) == 2
    assert "no evaluation results" in capsys.readouterr().err


def test_seed_sweep_runs_each_seed_into_its_own_directory(tmp_path):
    base = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "mtrl", "train", "toy-mtsac", "--seeds", "0,1", "--run-dir",
           str(base), "--total-steps", "400", "--warmup-steps", "200",
           "--agent.actor-hidden", "8", "--agent.critic-hidden", "8", "--agent.batch-size", "16",
           "--replay.capacity", "2000", "--eval.every", "0", "--eval.episodes-per-task", "1",
           "--checkpoint.every", "0", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for s in (0, 1):
        cfg_text = (base / f"seed{s}" / "config.yaml").read_text()
        assert f"seed: {s}" in cfg_text
        assert list((base / f"seed{s}" / "eval").glob("step_*.json"))
        # each seed can be followed: its progress lines, and its whole output beside them
        log = (base / f"seed{s}" / "train.log").read_text()
        assert "start: toy-mtsac" in log and "done at env step 400" in log
        assert "run directory:" in (base / f"seed{s}" / "output.log").read_text()
        assert f"seed {s}: started" in proc.stdout and f"seed {s}: done" in proc.stdout
    assert main(["train", "toy-mtsac", "--seeds", "0,0"]) == 2
    assert main(["train", "toy-mtsac", "--seeds", "0,1", "--seed", "3"]) == 2
    assert Path(base).is_dir()


def test_eval_video_writes_one_decodable_gif_per_task(three_seeds, capsys):
    from PIL import Image

    run = str(three_seeds[0])
    assert main(["eval", run, "--video", "--no-table", "--video-every", "3",
                 "--video-format", "gif"]) == 0
    printed = capsys.readouterr().out
    videos = Path(run) / "eval" / "videos"
    assert sorted(p.name for p in videos.glob("*.gif")) == [f"goal-{k}.gif" for k in range(4)]
    from mtrl.video import record_videos

    info = record_videos(run, every=3, fmt="gif", out_dir=str(videos))
    for task, v in info.items():
        steps = int(v["steps"])
        expect = len(range(0, steps + 1, 3)) + (1 if steps % 3 else 0)  # every 3rd + the last
        assert v["frames"] == expect
        assert 1 <= steps <= 50
        with Image.open(videos / f"{task}.gif") as im:
            # frames scaled to the GIF width, with the label band above the picture
            assert im.n_frames == expect and im.size == (v["width"], v["height"])
            assert im.size[0] == 320 and im.size[1] > 320
        assert f"{task}.gif: {expect} frames" in printed
    assert main(["eval", run, "--no-table"]) == 2
