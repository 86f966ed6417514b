"""Bad input gets a clear error naming the field and what is allowed, before any env is built."""

from __future__ import annotations

import json

import pytest
import torch

import mtrl.runner as runner
from mtrl.cli import main, split_overrides


@pytest.fixture
def no_env(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("an environment was built before the input was validated")

    monkeypatch.setattr(runner, "make_env", fail)


def _err(capsys, argv) -> str:
    code = main(argv)
    assert code == 2
    return capsys.readouterr().err


def test_unknown_preset_lists_valid_ones(capsys, no_env):
    err = _err(capsys, ["train", "mt11-mtsac"])
    assert "unknown preset 'mt11-mtsac'" in err and "mt10-mtsac" in err and "toy-mtsac" in err


def test_unknown_task_lists_valid_ones(capsys, no_env):
    err = _err(capsys, ["train", "mt10-mtsac", "--env.name", "metaworld",
                        "--env.tasks", "reach-v3,jump-v3"])
    assert "jump-v3" in err and "pick-place-v3" in err


def test_unknown_env_name(capsys, no_env):
    err = _err(capsys, ["train", "toy-mtsac", "--env.name", "pong"])
    assert "env.name='pong'" in err and "mt50" in err


def test_batch_not_divisible(capsys, no_env):
    err = _err(capsys, ["train", "mt10-mtsac", "--agent.batch-size", "1001"])
    assert "agent.batch_size=1001" in err and "divisible" in err


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--agent.actor-lr", "-1"], "agent.sac.actor_lr=-1.0 must be > 0"),
        (["--total-steps", "0"], "total_steps=0 must be > 0"),
        (["--replay.capacity", "0"], "replay.capacity=0 must be > 0"),
        (["--agent.critic-hidden", "400,-1"], "agent.critic_hidden"),
        (["--device", "gpu"], "device='gpu' is not valid; allowed: auto, cpu, cuda"),
        (["--agent.lrr", "1"], "unknown config field 'agent.lrr'"),
        (["--agent.batch-size", "big"], "agent.batch_size='big' is not an integer"),
    ],
)
def test_bad_values(capsys, no_env, argv, expect):
    assert expect in _err(capsys, ["train", "mt10-mtsac", *argv])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(capsys, no_env):
    err = _err(capsys, ["train", "toy-mtsac", "--device", "cuda"])
    assert "device='cuda'" in err and "not available" in err


def test_resume_missing_run(capsys, no_env, tmp_path):
    err = _err(capsys, ["train", "--resume", str(tmp_path / "nothing")])
    assert "does not exist" in err


def test_no_preset_no_resume(capsys, no_env):
    assert "name a preset" in _err(capsys, ["train"])


def test_eval_of_missing_run(capsys, tmp_path):
    err = _err(capsys, ["eval", str(tmp_path / "nothing")])
    assert "does not exist" in err


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "toy-mtsac" in out and "mt10-mtsac" in out and "mt50-mtsac" in out
    assert main(["presets", "mt10-mtsac"]) == 0
    out = capsys.readouterr().out
    assert "batch_size: 1280" in out
    # what will run: MT10's ten tasks, not the unused toy defaults; only SAC's section
    assert out.startswith("# mt10-mtsac: 10 task(s) (reach-v3, ")
    assert "num_tasks:" not in out and "max_episode_steps:" not in out
    assert "sac:" in out and "a2c:" not in out and "ppo:" not in out


def test_version(capsys):
    from mtrl import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mtrl {__version__}"


def test_split_overrides():
    rest, ov = split_overrides(["toy-mtsac", "--seed", "3", "--agent.lr=1", "--eval.final",
                                "--env.tasks", "a,b", "--no-progress", "--total-steps=5"])
    assert rest == ["toy-mtsac", "--seed", "3", "--no-progress", "--total-steps=5"]
    assert ov == [("agent.lr", "1"), ("eval.final", "true"), ("env.tasks", "a,b")]


def test_train_then_eval_json(capsys, tmp_path):
    run = tmp_path / "r"
    code = main(["train", "toy-mtsac", "--run-dir", str(run), "--total-steps", "400",
                 "--warmup-steps", "200", "--agent.batch-size", "32",
                 "--agent.actor-hidden", "16,16", "--agent.critic-hidden", "16,16",
                 "--no-progress", "--eval.final", "false", "--device", "cpu"])
    assert code == 0
    capsys.readouterr()
    out_json = run / "e.json"
    assert main(["eval", str(run), "--episodes-per-task", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    for k in range(4):
        assert f"goal-{k}" in out
    assert "mean" in out
    data = json.loads(out_json.read_text())
    assert data["episodes_per_task"] == 2 and data["step"] == 400
    assert set(data["tasks"]) == {f"goal-{k}" for k in range(4)}
    assert 0.0 <= data["success_mean"] <= 1.0


def test_eval_with_a_checkpoint_that_does_not_fit_the_config(capsys, tmp_path):
    run = tmp_path / "r"
    assert main(["train", "toy-mtsac", "--run-dir", str(run), "--total-steps", "200",
                 "--warmup-steps", "100", "--agent.batch-size", "32",
                 "--agent.actor-hidden", "16,16", "--agent.critic-hidden", "16,16",
                 "--no-progress", "--eval.final", "false", "--device", "cpu"]) == 0
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("critic_hidden:\n  - 16\n  - 16",
                                           "critic_hidden:\n  - 32\n  - 32"))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err
    assert "does not fit the networks" in err and "Traceback" not in err


def test_eval_of_a_truncated_checkpoint_names_it(capsys, tmp_path):
    run = tmp_path / "r"
    assert main(["train", "toy-mtsac", "--run-dir", str(run), "--total-steps", "400",
                 "--warmup-steps", "100", "--agent.batch-size", "32",
                 "--agent.actor-hidden", "16,16", "--agent.critic-hidden", "16,16",
                 "--checkpoint.every", "200", "--no-progress", "--eval.final", "false",
                 "--device", "cpu"]) == 0
    latest = run / "checkpoints" / "ckpt_000000000400.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes-per-task", "1"]) == 1
    assert str(latest) in capsys.readouterr().err
    previous = run / "checkpoints" / "ckpt_000000000200.pt"
    assert main(["eval", str(run), "--episodes-per-task", "1", "--checkpoint",
                 str(previous)]) == 0


def test_short_run_of_a_long_preset_shortens_the_warmup(monkeypatch, capsys):
    seen = []

    def fake_train(cfg, run_dir, **kw):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(runner, "train", fake_train)
    with pytest.raises(SystemExit):
        main(["train", "mt10-pcgrad-sac", "--total-steps", "20000"])
    assert seen[-1].warmup_steps == 5000 and seen[-1].total_steps == 20000
    assert "warmup_steps=40000 >= total_steps=20000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "mt10-pcgrad-sac", "--total-steps", "20000", "--warmup-steps", "30000"])
    assert seen[-1].warmup_steps == 30000
    with pytest.raises(SystemExit):
        main(["train", "mt10-mtsac", "--total-steps", "50000"])
    assert seen[-1].warmup_steps == 40000


def test_experiment_scripts_share_one_runner(monkeypatch):
    import mtrl.experiment as ex

    seen = []

    class Result:
        final_eval = None
        run_dir = "r"

    monkeypatch.setattr(ex, "train", lambda cfg, run_dir: seen.append((cfg, run_dir)) or Result())
    monkeypatch.setattr("sys.argv", ["x", "--seed", "4", "--total-steps", "999",
                                     "--run-dir", "R", "--device", "cpu"])
    ex.run_preset_script("toy-pcgrad-sac", "doc",
                         lambda cfg: setattr(cfg.agent, "batch_size", 64))
    cfg, run_dir = seen[0]
    assert (cfg.seed, cfg.total_steps, cfg.device, run_dir) == (4, 999, "cpu", "R")
    assert cfg.agent.actor_combiner == "pcgrad" and cfg.agent.batch_size == 64
