"""Which runs `mtrl report` / `mtrl plot` may put together: grouping by config, refusing mixed
budgets, benchmarks and protocols, rliable statistics, and Atari (human-normalized) reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_toy_config

from mtrl.analysis import (
    aggregate_metrics,
    automatic_labels,
    iqm,
    mean_score,
    probability_of_improvement,
    stratified_bootstrap_ci,
)
from mtrl.cli import main
from mtrl.config import dump_yaml
from mtrl.presets import get_preset
from mtrl.rundir import RunDir
from mtrl.runner import train

MLP = "toy-mtsac agent.actor_arch=mlp"
MULTIHEAD = "toy-mtsac agent.actor_arch=multihead"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    """Two configs (actor mlp / multihead) and two budgets (800 / 400 env steps = 200 / 100
    per task), evaluated every 200 steps with one episode per task."""
    base = tmp_path_factory.mktemp("compare")
    out = {}
    for name, steps, seed, arch in [("mlp800s0", 800, 0, "mlp"), ("mlp800s1", 800, 1, "mlp"),
                                    ("mlp400s0", 400, 0, "mlp"),
                                    ("mh800s0", 800, 0, "multihead")]:
        cfg = tiny_toy_config(seed=seed)
        cfg.total_steps = steps
        cfg.agent.actor_arch = arch
        cfg.eval.every = 200
        cfg.eval.final = True
        cfg.eval.episodes_per_task = 1
        cfg.checkpoint.every = 0
        train(cfg, base / name)
        out[name] = str(base / name)
    return out


def _report(argv, tmp_path, capsys) -> tuple[dict, str, str]:
    j = tmp_path / "report.json"
    code = main(["report", *argv, "--bootstrap", "200", "--json", str(j)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    return json.loads(j.read_text()), cap.out, cap.err


def _refused(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mtrl: error: ") and err.count("\n") == 1, err  # one line
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------------------------
# Groups


def test_automatic_labels_name_the_differing_field(runs, tmp_path, capsys):
    rep, out, _ = _report([runs["mlp800s0"], runs["mlp800s1"], runs["mh800s0"]], tmp_path,
                          capsys)
    assert list(rep["methods"]) == [MLP, MULTIHEAD]
    assert rep["methods"][MLP]["num_runs"] == 2 and rep["methods"][MLP]["seeds"] == [0, 1]
    assert rep["methods"][MULTIHEAD]["runs"] == [runs["mh800s0"]]
    assert f"| {MULTIHEAD} | 1 |" in out and f"| {MLP} | 2 |" in out

    # Seeds, run directories, devices, budgets and cadences do not make a method: one group,
    # labelled by its preset alone.
    a, b = tiny_toy_config(seed=0), tiny_toy_config(seed=3, total_steps=1600, device="auto")
    b.run_dir, b.eval.every, b.log.every, b.checkpoint.every = "elsewhere", 400, 100, 0
    b.agent.a2c.lr = 1.0  # unused by mtsac: not a difference
    assert automatic_labels([a, b]) == ["toy-mtsac", "toy-mtsac"]
    # Different presets are told apart by name; a field shows where a group leaves its
    # preset's value.
    pc = get_preset("toy-pcgrad-sac")
    assert automatic_labels([get_preset("toy-mtsac"), pc]) == ["toy-mtsac", "toy-pcgrad-sac"]
    pc.agent.sac.actor_lr = 0.01
    assert automatic_labels([get_preset("toy-mtsac"), pc]) == [
        "toy-mtsac", "toy-pcgrad-sac agent.sac.actor_lr=0.01"]
    c = tiny_toy_config()
    c.agent.actor_hidden = [32, 32]
    assert automatic_labels([a, c]) == ["toy-mtsac agent.actor_hidden=[16,16]",
                                        "toy-mtsac agent.actor_hidden=[32,32]"]


def test_mixed_budgets_are_refused_in_one_line(runs, tmp_path, capsys):
    a, short = runs["mlp800s0"], runs["mlp400s0"]
    err = _refused(["report", a, short], capsys)
    assert "group 'toy-mtsac' mixes budgets" in err
    assert f"{a}: total_steps=800 (200 env steps per task)" in err
    assert f"{short}: total_steps=400 (100 env steps per task)" in err
    assert "--allow-mixed" in err
    out = tmp_path / "curves.png"
    err = _refused(["plot", a, runs["mlp800s1"], short, "--out", str(out)], capsys)
    assert "mixes budgets" in err and short in err and "own series" in err
    assert not out.exists()
    err = _refused(["plot", a, short, "--out", str(out), "--profile"], capsys)
    assert "mixes budgets" in err


def test_allow_mixed_splits_budgets_into_rows_and_series(runs, tmp_path, capsys):
    from mtrl.plotting import plot_runs

    a0, a1, short = runs["mlp800s0"], runs["mlp800s1"], runs["mlp400s0"]
    rep, out, err = _report([a0, a1, short, "--allow-mixed"], tmp_path, capsys)
    long_row, short_row = "toy-mtsac [200 steps/task]", "toy-mtsac [100 steps/task]"
    assert list(rep["methods"]) == [long_row, short_row]
    assert rep["methods"][long_row]["runs"] == [a0, a1]
    assert rep["methods"][short_row]["runs"] == [short]
    assert rep["methods"][long_row]["metadata"]["steps_per_task"] == 200
    assert rep["methods"][short_row]["metadata"]["steps_per_task"] == 100
    assert rep["methods"][short_row]["split_by"] == ["budget"]
    assert "differ in budget" in err and f"| {short_row} | 1 |" in out

    info = plot_runs([a0, a1, short], tmp_path / "c.png", allow_mixed=True)
    assert info["methods"] == [long_row, short_row]
    assert info["series"] == {long_row: [a0, a1], short_row: [short]}
    # Each budget is drawn to its own end: nothing is cut to the shortest run (and every curve
    # starts at the evaluation of the untrained policy at step 0).
    assert info["span"][long_row] == (0.0, 800.0)
    assert info["span"][short_row] == (0.0, 400.0)
    assert info["curves"] == 2 * len(info["panels"])


def test_runs_of_other_configs_or_budgets_are_never_merged(runs, tmp_path, capsys):
    rep, _, _ = _report([*runs.values(), "--allow-mixed"], tmp_path, capsys)
    assert len(rep["methods"]) == 3
    for m in rep["methods"].values():
        cfgs = [RunDir(d).config() for d in m["runs"]]
        assert len({c.total_steps for c in cfgs}) == 1
        assert len({c.agent.actor_arch for c in cfgs}) == 1
    assert set(rep["methods"]) == {f"{MLP} [200 steps/task]", f"{MLP} [100 steps/task]",
                                   MULTIHEAD}


def test_label_and_group_by(runs, tmp_path, capsys):
    a0, a1, mh, short = (runs[k] for k in ("mlp800s0", "mlp800s1", "mh800s0", "mlp400s0"))
    rep, _, _ = _report([a0, a1, mh, "--label", f"{a0}=base", "--label", f"{a1}=base",
                         "--label", f"{mh}=heads"], tmp_path, capsys)
    assert {k: m["num_runs"] for k, m in rep["methods"].items()} == {"base": 2, "heads": 1}
    # A label may merge configs (said on stderr), never budgets.
    rep, _, err = _report([a0, mh, "--label", f"{a0}=x", "--label", f"{mh}=x"], tmp_path,
                          capsys)
    assert list(rep["methods"]) == ["x"] and "differ in agent.actor_arch" in err
    err = _refused(["report", a0, short, "--label", f"{a0}=x", "--label", f"{short}=x"],
                   capsys)
    assert "group 'x' mixes budgets" in err
    rep, _, _ = _report([a0, a1, mh, "--group-by", "agent.actor-arch"], tmp_path, capsys)
    assert list(rep["methods"]) == ["agent.actor_arch=mlp", "agent.actor_arch=multihead"]
    assert "unknown config field 'agent.nope'" in _refused(
        ["report", a0, "--group-by", "agent.nope"], capsys)
    assert "is not one of the run directories" in _refused(
        ["report", a0, "--label", "nope=x"], capsys)
    assert "is given twice" in _refused(["report", a0, a0], capsys)

    from mtrl.plotting import plot_runs

    info = plot_runs([a0, mh], tmp_path / "l.png", labels=[f"{a0}=one", f"{mh}=two"])
    assert info["methods"] == ["one", "two"]
    info = plot_runs([a0, mh], tmp_path / "g.png", group_by="agent.actor_arch")
    assert info["methods"] == ["agent.actor_arch=mlp", "agent.actor_arch=multihead"]


# --------------------------------------------------------------------------------------------
# rliable


def test_rliable_agrees_with_the_hand_computed_statistics():
    fixed = [np.arange(1, 9, dtype=float).reshape(2, 4), np.array([[5.0, 1.0, 3.0, 2.0, 4.0]]),
             np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[7.0]]),
             np.array([[0.0, 0.0, 0.0, 100.0], [1.0, 1.0, 1.0, 1.0]])]
    expected_iqm = [4.5, 3.0, 1.0, 7.0, 0.75]
    for s, want in zip(fixed, expected_iqm, strict=True):
        agg = aggregate_metrics(s, reps=200)
        assert agg["iqm"][0] == pytest.approx(iqm(s)) == pytest.approx(want)
        assert agg["mean"][0] == pytest.approx(mean_score(s))
        assert agg["median"][0] == pytest.approx(np.median(s.mean(0)))
        assert agg["optimality_gap"][0] == pytest.approx(1 - np.minimum(s, 1).mean())
    # Two runs of one task scoring 0 and 1: both bootstraps give [0, 1] for the mean.
    two = np.array([[0.0], [1.0]])
    assert aggregate_metrics(two, reps=4000)["mean"][1:] == pytest.approx((0.0, 1.0))
    assert stratified_bootstrap_ci(two, mean_score, reps=4000) == (0.0, 1.0)
    # Identical runs: no uncertainty in either.
    same = np.tile(np.array([[0.2, 0.9, 0.4]]), (3, 1))
    agg = aggregate_metrics(same, reps=200)
    assert agg["iqm"] == pytest.approx((iqm(same),) * 3)
    # The intervals of rliable and of the hand-written bootstrap agree up to resampling noise.
    s = np.random.default_rng(1).random((5, 6))
    lo, hi = stratified_bootstrap_ci(s, iqm, reps=3000)
    agg = aggregate_metrics(s, reps=3000)
    assert agg["iqm"][1] == pytest.approx(lo, abs=0.03)
    assert agg["iqm"][2] == pytest.approx(hi, abs=0.03)
    # Reproducible, and the caller's global RNG is left alone.
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    assert aggregate_metrics(s, reps=200, seed=3) == aggregate_metrics(s, reps=200, seed=3)
    assert (np.random.get_state()[1] == before).all()


def test_probability_of_improvement(runs, tmp_path, capsys):
    better, worse = np.array([[1.0, 2.0], [2.0, 3.0]]), np.array([[0.0, 0.0], [0.5, 1.0]])
    assert probability_of_improvement(better, worse, reps=200) == pytest.approx((1, 1, 1))
    assert probability_of_improvement(worse, better, reps=200)[0] == pytest.approx(0.0)
    assert probability_of_improvement(better, better, reps=200)[0] == pytest.approx(0.5)
    # By hand: of the 2 x 2 pairs (1, .5), (1, 0), (.2, .5), (.2, 0), x wins 3.
    x, y = np.array([[1.0], [0.2]]), np.array([[0.5], [0.0]])
    assert probability_of_improvement(x, y, reps=200)[0] == pytest.approx(0.75)

    rep, out, _ = _report([runs["mlp800s0"], runs["mlp800s1"], runs["mh800s0"], "--compare",
                           "agent.actor_arch=multihead", "agent.actor_arch=mlp"], tmp_path,
                          capsys)
    (c,) = rep["comparisons"]
    assert (c["x"], c["y"]) == (MULTIHEAD, MLP)
    assert 0 <= c["ci95"][0] <= c["probability_of_improvement"] <= c["ci95"][1] <= 1
    assert f"| {MULTIHEAD} > {MLP} |" in out and "P(X > Y)" in out
    assert "not a group" in _refused(["report", runs["mlp800s0"], "--compare", "a", "b"],
                                     capsys)


# --------------------------------------------------------------------------------------------
# Atari: human-normalized scores, from a synthetic run directory (no emulator)

GAMES_HNS = {"Pong": -0.2, "Breakout": 2.5, "SpaceInvaders": 0.6, "Seaquest": 0.05,
             "BeamRider": 0.1, "Qbert": 0.8}  # ATARI6, the games of atari6-a2c-popart


def _atari_run(path: Path, seed: int, *, scale: float = 1.0, episodes: int = 3,
               games: list[str] | None = None) -> str:
    from torch.utils.tensorboard import SummaryWriter

    from mtrl.evaluation import protocol_text

    cfg = get_preset("atari6-a2c-popart")
    cfg.seed, cfg.total_steps = seed, 1_200_000
    cfg.eval.episodes_per_task = episodes
    if games is not None:
        cfg.env.tasks = games
    games = cfg.env.tasks
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_yaml(cfg))
    protocol = protocol_text(episodes, deterministic=False, has_success=False)
    bench = {"name": "atari", "games": games, "has_success": False, "frame_skip": 4,
             "sticky_actions": 0.25, "noop_max": 30, "full_action_space": True,
             "max_episode_frames": 108_000, "episode_length": 27_000}
    (path / "metadata.json").write_text(json.dumps(
        {"seed": seed, "benchmark": bench, "task_names": games,
         "evaluation_protocol": protocol}))
    (path / "eval").mkdir()
    writer = SummaryWriter(str(path))
    for step in (0, 600_000, 1_200_000):
        frac = step / 1_200_000
        hns = {g: GAMES_HNS.get(g, 0.3) * scale * frac + 0.01 * seed for g in games}
        ev = {"run_dir": str(path), "checkpoint": None, "step": step,
              "episodes_per_task": episodes, "success_mean": 0.0, "return_mean": 10.0,
              "hns_median": float(np.median(list(hns.values()))),
              "hns_mean": float(np.mean(list(hns.values()))),
              "tasks": {g: {"success": 0.0, "return": 100.0 * h, "episodes": episodes,
                            "human_normalized_score": h} for g, h in hns.items()},
              "protocol": protocol}
        (path / "eval" / f"step_{step:012d}.json").write_text(json.dumps(ev))
        for g, h in hns.items():
            writer.add_scalar(f"eval/hns/{g}", h, step)
            writer.add_scalar(f"eval/return/{g}", 100.0 * h, step)
    writer.close()
    return str(path)


@pytest.fixture(scope="module")
def atari(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("atari")
    return {"s0": _atari_run(base / "s0", 0), "s1": _atari_run(base / "s1", 1),
            "eps5": _atari_run(base / "eps5", 2, episodes=5),
            "other_games": _atari_run(base / "og", 3, games=["Pong", "Boxing"])}


def test_atari_report_is_in_human_normalized_score(atari, tmp_path, capsys):
    rep, out, _ = _report([atari["s0"], atari["s1"]], tmp_path, capsys)
    (m,) = rep["methods"].values()
    assert list(rep["methods"]) == ["atari6-a2c-popart"]
    assert m["score"] == "human-normalized score" and "success_mean" not in m
    scores = np.array([[GAMES_HNS[g] + 0.01 * s for g in GAMES_HNS] for s in (0, 1)])
    assert m["median"] == pytest.approx(np.median(scores.mean(0)))
    assert m["mean"] == pytest.approx(scores.mean())
    assert m["iqm"] == pytest.approx(iqm(scores))
    assert m["tasks"]["Breakout"]["per_run"] == pytest.approx([2.5, 2.51])
    assert "| method | runs | median HNS [95% CI] | mean HNS [95% CI] | IQM HNS [95% CI]" in out
    assert "| game (HNS) |" in out and "env steps / game" in out
    # The protocol is the run's own: sampled actions, returns, no success flag.
    assert "success" not in out.lower() and "deterministic" not in out
    assert "actions sampled from the policy; 3 episodes per game" in out
    assert m["metadata"]["steps_per_task"] == 1_200_000 // 6


def test_atari_groups_are_checked_too(atari, runs, tmp_path, capsys):
    s0 = atari["s0"]
    # 3 vs 5 evaluation episodes: two groups, named by the field ...
    rep, _, _ = _report([s0, atari["eps5"]], tmp_path, capsys)
    assert list(rep["methods"]) == ["atari6-a2c-popart eval.episodes_per_task=3",
                                    "atari6-a2c-popart eval.episodes_per_task=5"]
    # ... and refused when labelled as one.
    err = _refused(["report", s0, atari["eps5"], "--label", f"{s0}=a",
                    "--label", f"{atari['eps5']}=a"], capsys)
    assert "mixes evaluation protocols" in err and "5 episodes per task" in err
    err = _refused(["report", s0, atari["other_games"], "--group-by", "agent.name"], capsys)
    assert "evaluated on different tasks" in err and "Boxing" in err
    err = _refused(["report", s0, runs["mlp800s0"]], capsys)
    assert "scored differently" in err


def test_atari_plot_grid_of_hns_panels_from_step_0(atari, tmp_path):
    from PIL import Image

    from mtrl.plotting import DPI, MAX_COLS, PANEL_H, PANEL_W, plot_profiles, plot_runs

    out = tmp_path / "atari.png"
    info = plot_runs([atari["s0"], atari["s1"]], out)
    assert info["metric"] == "eval-hns"
    assert info["panels"] == ["median over games", "IQM over games", "mean over games",
                              *GAMES_HNS]
    assert info["span"]["atari6-a2c-popart"] == (0.0, 1_200_000.0)  # the evaluation at step 0
    with Image.open(out) as im:
        assert im.size[0] == round(MAX_COLS * PANEL_W * DPI)
        assert im.size[1] >= 3 * 300  # 9 panels: 3 rows of at least 300 px
        assert np.asarray(im.convert("L")).std() > 10
    assert PANEL_H * DPI >= 300
    info = plot_profiles([atari["s0"], atari["s1"]], tmp_path / "profile.png", reps=200)
    assert info["methods"] == ["atari6-a2c-popart"] and (tmp_path / "profile.png").exists()


def test_plot_layout_of_mt10():
    from mtrl.plotting import _HEADER, DPI, PANEL_H, PANEL_W, _layout

    cols, rows, width, height, _, footer = _layout(11, ["mt10-mtsac"])  # mean + 10 tasks
    assert (cols, rows, width) == (4, 3, 4 * PANEL_W)
    assert (height - footer - _HEADER) / rows == PANEL_H and PANEL_H * DPI >= 300
