"""`mtrl train PRESET --sweep FIELD=V1,V2 --seeds ...`: every combination of values x seeds runs
as its own process into RUN_DIR/<field=value>/seed<k>, a failed run is resumed from its last
checkpoint (--retries), the sweep ends with a table, and `mtrl report` groups the runs by the
swept values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_validation import assert_clean_error, run_cli, stub_train  # noqa: F401

from mtrl.rundir import RunDir

TINY = ["--total-steps", "400", "--warmup-steps", "200", "--agent.actor-hidden", "16,16",
        "--agent.critic-hidden", "16,16", "--agent.batch-size", "32", "--replay.capacity",
        "2000", "--eval.every", "200", "--eval.episodes-per-task", "2", "--checkpoint.every",
        "200", "--log.every", "200"]


def _mtrl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mtrl", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def test_a_sweep_trains_every_combination_and_reports_them_apart(tmp_path):
    base = tmp_path / "sw"
    p = _mtrl("train", "toy-mtsac", "--sweep", "agent.sac.actor-lr=1e-3,3e-4", *TINY,
              "--seeds", "0-1", "--jobs", "2", "--run-dir", str(base))
    assert p.returncode == 0, p.stdout + p.stderr
    dirs = sorted(str(d.relative_to(base)) for d in base.glob("*/seed*"))
    assert dirs == [f"agent.sac.actor-lr={lr}/seed{s}" for lr in ("1e-3", "3e-4")
                    for s in (0, 1)]
    for d in base.glob("*/seed*"):
        cfg = RunDir(d).config(plugins=False)
        lr = float(d.parent.name.split("=")[1])
        assert cfg.agent.sac.actor_lr == lr and cfg.seed == int(d.name[4:])
        assert cfg.total_steps == 400
    # the summary table: one line per run, with its latest evaluation
    table = p.stdout.split("latest evaluation", 1)[1]
    for lr in ("1e-3", "3e-4"):
        for s in (0, 1):
            assert f"agent.sac.actor-lr={lr} seed {s}  done" in table
    assert table.count("step 400: success ") == 4
    assert f"report: mtrl report {base}/*/seed*" in p.stdout
    # mtrl report groups the runs by the swept value (labels name the field)
    out = tmp_path / "r.json"
    r = _mtrl("report", *map(str, sorted(base.glob("*/seed*"))), "--json", str(out))
    assert r.returncode == 0, r.stderr
    methods = json.loads(out.read_text())["methods"]
    assert len(methods) == 2
    assert all("agent.sac.actor_lr=" in name and len(m["runs"]) == 2
               for name, m in methods.items())


CRASH_ONCE = '''
import os
import mtrl
from mtrl.optim.combiners import MeanCombiner


class CrashOnce(MeanCombiner):
    """The mean combiner, except that the first process to reach its 10th update dies there
    (after the checkpoint at env step 200), as a crash of the machine would kill it."""

    def __init__(self):
        super().__init__()
        self.updates = 0

    def backward(self, task_losses, params):
        self.updates += 1
        marker = os.environ["MTRL_TEST_CRASH_MARKER"]
        if self.updates == 10:
            try:  # atomic: of runs in parallel, exactly one creates the marker and dies
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(3)
        super().backward(task_losses, params)


mtrl.register_combiner("crash-once", lambda cfg: CrashOnce())
'''


def test_a_failed_run_is_resumed_from_its_last_checkpoint(tmp_path):
    plugin = tmp_path / "crash_once.py"
    plugin.write_text(CRASH_ONCE)
    marker = tmp_path / "crashed"
    base = tmp_path / "sw"
    p = _mtrl("train", "toy-mtsac", *TINY, "--plugin", str(plugin), "--agent.critic-combiner",
              "crash-once", "--seeds", "0", "--retries", "1", "--run-dir", str(base),
              env={"MTRL_TEST_CRASH_MARKER": str(marker)})
    assert marker.exists(), p.stdout + p.stderr  # the first attempt died
    assert p.returncode == 0, p.stdout + p.stderr
    assert "seed 0: FAILED (3); resuming from its last checkpoint" in p.stdout
    assert "seed 0: resumed (retry 1)" in p.stdout
    assert "seed 0  done" in p.stdout and "step 400: success" in p.stdout
    meta = json.loads((base / "seed0" / "metadata.json").read_text())
    assert [r["env_steps"] for r in meta["resumes"]] == [200]
    assert (base / "seed0" / "eval" / "step_000000000400.json").exists()


def test_without_retries_a_failed_run_stays_failed(tmp_path):
    plugin = tmp_path / "crash_once.py"
    plugin.write_text(CRASH_ONCE)
    base = tmp_path / "sw"
    p = _mtrl("train", "toy-mtsac", *TINY, "--plugin", str(plugin), "--agent.critic-combiner",
              "crash-once", "--seeds", "0", "--run-dir", str(base),
              env={"MTRL_TEST_CRASH_MARKER": str(tmp_path / "crashed")})
    assert p.returncode == 1
    assert "seed 0: FAILED (3)" in p.stdout and "resuming" not in p.stdout
    assert "seed 0  FAILED (3)" in p.stdout


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--sweep", "agent.sac.actor-lr"], "give FIELD=V1,V2,..."),
        (["--sweep", "agent.sac.actor-lr="], "give FIELD=V1,V2,..."),
        (["--sweep", "agent.sac.actor-lr=1e-3,1e-3"], "lists a value twice"),
        (["--sweep", "agent.sac.actor-lr=1e-3", "--sweep", "agent.sac.actor_lr=3e-4"],
         "swept twice"),
        (["--sweep", "agent.sac.actor-lr=1e-3", "--agent.sac.actor-lr", "3e-4"],
         "also set by --agent.sac.actor-lr"),
        (["--sweep", "agent.sac.actr-lr=1e-3"], "agent.sac.actor_lr"),  # did you mean
        (["--sweep", "agent.sac.actor-lr=-1"], "agent.sac.actor_lr"),  # validated per value
        (["--sweep", "agent.sac.actor-lr=1e-3", "--retries", "-1"], "--retries=-1 must be"),
        (["--retries", "2"], "--retries is only used with --seeds or --sweep"),
        (["--sweep", "agent.sac.actor-lr=1e-3", "--seed", "1"], "cannot be combined"),
    ],
)
def test_bad_sweeps_are_one_line_errors(stub_train, argv, expect):  # noqa: F811
    full = ["train", "toy-mtsac", *argv]
    code, err = run_cli(full)
    assert expect in assert_clean_error(code, err, argv=full)


def test_a_sweep_without_seeds_uses_the_presets_seed(stub_train, tmp_path):  # noqa: F811
    code, _err = run_cli(["train", "toy-mtsac", "--sweep", "agent.batch-size=32,64",
                          "--jobs", "1", "--run-dir", str(tmp_path / "s")])
    assert code == "reached"  # validated, and got to starting the first process
    assert Path(tmp_path / "s" / "agent.batch-size=32" / "seed0").is_dir()


def test_the_ray_launcher_runs_each_seed_as_a_ray_task_and_resumes_a_failed_one(tmp_path):
    pytest.importorskip("ray")
    plugin = tmp_path / "crash_once.py"
    plugin.write_text(CRASH_ONCE)
    marker = tmp_path / "crashed"
    base = tmp_path / "sw"
    p = _mtrl("train", "toy-mtsac", *TINY, "--plugin", str(plugin), "--agent.critic-combiner",
              "crash-once", "--seeds", "0,1", "--launcher", "ray", "--resources-per-run",
              "cpu=1", "--retries", "1", "--run-dir", str(base),
              env={"MTRL_TEST_CRASH_MARKER": str(marker), "RAY_USAGE_STATS_ENABLED": "0"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "as Ray tasks (cpu=1 each on a cluster of" in p.stdout
    assert marker.exists() and p.stdout.count("resuming from its last checkpoint") == 1
    for s in (0, 1):
        assert f"seed {s}  done" in p.stdout
        assert (base / f"seed{s}" / "eval" / "step_000000000400.json").exists()
    resumed = [json.loads((base / f"seed{s}" / "metadata.json").read_text()).get("resumes", [])
               for s in (0, 1)]
    assert sorted(len(r) for r in resumed) == [0, 1]


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--seeds", "0", "--launcher", "ray", "--resources-per-run", "gpu=x"], "not a number"),
        (["--seeds", "0", "--launcher", "ray", "--resources-per-run", "tpu=1"], "cpu=N"),
        (["--seeds", "0", "--launcher", "ray", "--resources-per-run", "cpu=0"], "positive"),
        (["--seeds", "0", "--resources-per-run", "cpu=2"], "only used with --launcher ray"),
        (["--launcher", "ray"], "only used with --seeds or --sweep"),
        (["--seeds", "0", "--launcher", "slurm"], "invalid choice: 'slurm'"),
    ],
)
def test_bad_launch_options_are_one_line_errors(stub_train, argv, expect):  # noqa: F811
    full = ["train", "toy-mtsac", *argv]
    code, err = run_cli(full)
    assert expect in assert_clean_error(code, err, argv=full)


def test_seed_ranges_and_several_fields_in_one_sweep(stub_train, tmp_path):  # noqa: F811
    from mtrl.cli import _parse_seeds

    assert _parse_seeds("0-3") == [0, 1, 2, 3]
    assert _parse_seeds("0-2,7, 9") == [0, 1, 2, 7, 9]
    code, _err = run_cli(["train", "toy-mtsac", "--sweep", "agent.batch-size=32,64",
                          "agent.sac.actor-lr=1e-3,3e-4", "--seeds", "0-1", "--jobs", "1",
                          "--run-dir", str(tmp_path / "s")])
    assert code == "reached"
    first = tmp_path / "s" / "agent.batch-size=32,agent.sac.actor-lr=1e-3" / "seed0"
    assert first.is_dir()
