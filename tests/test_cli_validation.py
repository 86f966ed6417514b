"""Bad input of every kind gets one clean line (``mtrl: error: ...``, exit status 2) naming the
option, field or file and the problem — never a Python traceback, never silence.

Most command lines run in-process through :func:`mtrl.cli.main` (training itself is stubbed
out: a command line either fails validation or reaches ``train``); a handful run as real
``python -m mtrl`` processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import mtrl.runner as runner
from mtrl import config as C
from mtrl.cli import EXIT_USAGE, main
from mtrl.config import ConfigError
from mtrl.presets import get_preset

REPO = Path(__file__).resolve().parents[1]


class _Reached(Exception):
    """Raised by the stubbed ``train``: the command line passed validation."""


@pytest.fixture
def stub_train(monkeypatch, tmp_path):
    def fake_train(cfg, run_dir=None, **kw):
        raise _Reached

    real_popen = subprocess.Popen

    def fake_popen(cmd, *a, **k):  # `--seeds`: never start training processes
        if "mtrl" in list(cmd):
            raise _Reached
        return real_popen(cmd, *a, **k)

    monkeypatch.setattr(runner, "train", fake_train)
    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    monkeypatch.chdir(tmp_path)  # default run directories land here


def run_cli(argv: list[str]) -> tuple[int | str, str]:
    """``(exit status, stderr)`` of ``mtrl ARGV`` in-process; status ``"reached"`` when the
    command line passed validation and got to training."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str = main(argv)
        except _Reached:
            code = "reached"
        except SystemExit as e:  # argparse must not exit by itself any more
            code = f"SystemExit({e.code})"
    return code, err.getvalue()


def assert_clean_error(code: int | str, err: str, *names: str, argv: object = None) -> str:
    """Exit status 2, exactly one ``mtrl: error:`` line and nothing else on stderr, no
    traceback, and the line names one of ``names``."""
    where = f"{argv}: " if argv is not None else ""
    assert code == EXIT_USAGE, f"{where}exit status {code}, stderr:\n{err}"
    assert "Traceback" not in err, f"{where}{err}"
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("mtrl: error: "), f"{where}{err}"
    if names:
        assert any(n in lines[0] for n in names), f"{where}{lines[0]!r} names none of {names}"
    return lines[0]


# --------------------------------------------------------------------------------------------
# Property: every numeric option of `mtrl train toy-mtsac`, every kind of bad value

BAD_VALUES = ("nan", "inf", "-inf", "1e12", "-1", "0", "abc", "")


def _numeric_fields() -> dict[str, tuple[type, bool, bool]]:
    """``{path: (number type, optional, list)}`` of every int/float config field."""
    out = {}
    for path, tp in C.field_paths().items():
        optional, inner = C._is_optional(tp)
        is_list = typing.get_origin(inner) is list
        elem = typing.get_args(inner)[0] if is_list else inner
        if elem in (int, float):
            out[path] = (elem, optional, is_list)
    return out


NUMERIC = _numeric_fields()

#: Fields of toy-mtsac where 0 or -1 is invalid (checked > 0) or where 1e12 cannot work
#: (memory, ranges); other values may be legitimately valid (eval.every=0, log_std_min=-1).
MUST_FAIL: dict[str, set[str]] = {
    "0": {"total_steps", "updates_per_step", "agent.batch_size", "replay.capacity",
          "agent.actor_hidden", "agent.critic_hidden", "agent.sac.actor_lr", "agent.sac.critic_lr",
          "agent.sac.alpha_lr", "agent.sac.init_alpha", "agent.sac.tau", "agent.grad_clip",
          "agent.popart_beta", "agent.sac.max_q_value", "agent.combiner.weight_lr",
          "agent.combiner.dwa_temperature", "agent.combiner.dwa_window", "agent.arch.num_layers",
          "agent.arch.module_dim", "agent.arch.expert_hidden", "env.num_tasks",
          "env.envs_per_task", "env.max_episode_steps", "eval.episodes_per_task", "log.every",
          "checkpoint.keep_last", "env.reward_scales"},
    "-1": {"seed", "warmup_steps", "eval.every", "checkpoint.every",
           "agent.combiner.diagnostics_every", "agent.combiner.gradnorm_alpha",
           "agent.arch.router_diversity", "agent.gamma"},
    "1e12": {"seed", "agent.batch_size", "replay.capacity", "agent.actor_hidden",
             "agent.critic_hidden", "env.num_tasks", "env.envs_per_task", "agent.gamma",
             "agent.sac.tau", "agent.popart_beta", "agent.sac.log_std_min"},
}
MUST_FAIL["-1"] |= MUST_FAIL["0"] - {"env.reward_scales"}


def _must_fail(path: str, value: str, tp: type, optional: bool, is_list: bool) -> bool:
    if value in ("nan", "inf", "-inf", "abc"):
        return True
    if value == "" and not optional and not is_list:
        return True
    if tp is int and value == "1e12" and path in ("seed",):
        return True
    return path in MUST_FAIL.get(value, set())


def _names(path: str) -> tuple[str, ...]:
    return (path, path.replace("_", "-"), "--" + path.replace("_", "-"))


@pytest.mark.parametrize("path", list(NUMERIC))
def test_every_bad_value_of_every_numeric_option(stub_train, path):
    tp, optional, is_list = NUMERIC[path]
    flag = "--" + path.replace("_", "-")
    for value in BAD_VALUES:
        argv = ["train", "toy-mtsac", flag, value]
        code, err = run_cli(argv)
        if code == "reached" and not _must_fail(path, value, tp, optional, is_list):
            continue  # a valid value (e.g. eval.every=0)
        assert_clean_error(code, err, *_names(path), argv=argv)


@pytest.mark.parametrize(
    ("flag", "extra"),
    [("--seed", []), ("--total-steps", []), ("--jobs", ["--seeds", "0,1"]),
     ("--seeds", [])],
)
def test_every_bad_value_of_the_train_flags(stub_train, flag, extra):
    for value in BAD_VALUES:
        argv = ["train", "toy-mtsac", *extra, flag, value]
        code, err = run_cli(argv)
        if code == "reached":
            assert (flag, value) in {("--seed", "0"), ("--seeds", "0")}, argv
            continue
        assert_clean_error(code, err, flag, flag.lstrip("-").replace("-", "_"), argv=argv)


def test_non_finite_floats_are_refused_in_every_field():
    """Generically: every float field (and float list entry) of every section."""
    floats = [p for p, (tp, _, _) in NUMERIC.items() if tp is float]
    assert {"agent.sac.init_alpha", "agent.gamma", "env.reward_scales", "agent.ppo.clip_range",
            "agent.distral.beta", "agent.combiner.weight_lr"} <= set(floats)
    for path in floats:
        for bad in (float("inf"), float("-inf"), float("nan")):
            cfg = get_preset("toy-mtsac")
            *parents, leaf = path.split(".")
            obj = cfg
            for p in parents:
                obj = getattr(obj, p)
            is_list = NUMERIC[path][2]
            setattr(obj, leaf, [1.0] * 4 if is_list else bad)
            if is_list:
                getattr(obj, leaf)[2] = bad
            with pytest.raises(ConfigError) as e:
                C.validate(cfg)
            shown = f"{path}[2]" if is_list else path
            assert str(e.value) == f"{shown} must be a finite number, got {bad!r}"


def test_the_messages_of_the_user_trial(stub_train, monkeypatch):
    monkeypatch.setattr(C, "machine_memory", lambda: 16 * 2**30)
    cases = {
        ("--agent.sac.init-alpha", "inf"): "agent.sac.init_alpha must be a finite number, got inf",
        ("--agent.batch-size", "1e12"): "agent.batch_size=1000000000000 needs ~",
        ("--replay.capacity", "1e12"): "replay.capacity=1000000000000 needs ~",
        ("--seed", "99999999999999999999"): "seed=99999999999999999999 must be an integer in "
                                            f"[0, {C.MAX_SEED}]",
        ("--replay.capacity", "20000000"): "above the replay buffer's limit of 16777216",
        ("--env.num-tasks", "1000000000"): "env.num_tasks=1000000000 needs ~",
    }
    for (flag, value), expect in cases.items():
        code, err = run_cli(["train", "toy-mtsac", flag, value])
        assert expect in assert_clean_error(code, err), err
    code, err = run_cli(["train", "toy-mtsac", "--replay.capacity", "1e12"])
    line = assert_clean_error(code, err)
    assert line == ("mtrl: error: replay.capacity=1000000000000 needs ~29 TB of memory for the "
                    "replay buffer (32 bytes per transition); this machine has 16 GB")


def test_memory_estimate_against_a_small_machine(monkeypatch):
    cfg = get_preset("mt10-mtsac")
    cfg.replay.capacity = 2**24
    monkeypatch.setattr(C, "machine_memory", lambda: 4 * 2**30)
    with pytest.raises(ConfigError) as e:
        C.validate(cfg)
    assert str(e.value) == ("replay.capacity=16777216 needs ~5.2 GB of memory for the replay "
                            "buffer (336 bytes per transition); this machine has 4.0 GB")
    C.validate(cfg, memory=False)  # evaluation does not allocate the buffer
    monkeypatch.setattr(C, "machine_memory", lambda: 64 * 2**30)
    C.validate(cfg)
    assert C.format_bytes(4.1 * 2**40) == "4.1 TB" and C.format_bytes(24 * 2**30) == "24 GB"


# --------------------------------------------------------------------------------------------
# Command-line arguments that are not config fields


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["train", "toy-mtsac", "--seeds", ""], "--seeds='' lists no seeds"),
        (["train", "toy-mtsac", "--seeds", "0,1", "--jobs", "0"], "--jobs=0 must be >= 1"),
        (["train", "toy-mtsac", "--seeds", "0,1", "--jobs", "-2"], "--jobs=-2 must be >= 1"),
        (["train", "toy-mtsac", "--jobs", "0"], "--jobs is only used with --seeds"),
        (["train", "toy-mtsac", "--jobs", "4"], "--jobs is only used with --seeds"),
        (["train", "toy-mtsac", "--seeds", "3-1"], "--seeds='3-1' must be comma-separated"),
        (["train", "toy-mtsac", "--seeds", "0-3,2"], "distinct"),
        (["train", "toy-mtsac", "--seeds", "a"], "--seeds='a' must be comma-separated"),
        (["train", "toy-mtsac", "--seeds", "0,0"], "distinct"),
        (["train", "toy-mtsac", "--seeds", "1,4294967296"], "seed 4294967296 is not in"),
        (["train", "toy-mtsac", "--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
        (["train", "toy-mtsac", "--run-dir", ""], "--run-dir is empty"),
        (["train", "--resume", ""], "--resume is empty"),
        (["train", "toy-mtsac", "--agent.batch-size"], "--agent.batch-size needs a value"),
        (["train", "toy-mtsac", "--agent.batchsize", "3"], "unknown config field"),
        (["eval"], "required: run_dir (see `mtrl eval --help`)"),
        (["report", "x", "--metric", "train-return"],
         "unrecognized arguments: --metric train-return (see `mtrl report --help`)"),
        (["report", "x", "--bootstrap", "1000000000000"], "--bootstrap=1000000000000 must be <="),
        (["plot", "x", "--out", ""], "--out is empty"),
        (["report", "x", "--json", ""], "--json is empty"),
        (["eval", "x", "--json", ""], "--json is empty"),
        (["eval", "x", "--checkpoint", ""], "--checkpoint is empty"),
        (["train", "--resume", "x", "--checkpoint", ""], "--checkpoint is empty"),
        (["eval", "x", "--video-every", "99999999999999999999"], "--video-every="),
        (["eval", "x", "--episodes-per-task", "99999999999999999999"], "--episodes-per-task="),
        (["eval", "x", "--episodes-per-task", "nan"], "argument --episodes-per-task"),
        (["distill", "toy-distill", "--teachers", ""], "--teachers is empty"),
        (["distill", "toy-distill", "--teacher", "goal-0="], "names no teacher"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments(stub_train, argv, expect):
    code, err = run_cli(argv)
    assert expect in assert_clean_error(code, err, argv=argv)


def test_run_dir_naming_a_file(stub_train, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    for argv in (["train", "toy-mtsac", "--run-dir", str(f)],
                 ["train", "toy-mtsac", "--seeds", "0,1", "--run-dir", str(f)],
                 ["distill", "toy-distill", "--run-dir", str(f)]):
        code, err = run_cli(argv)
        assert f"--run-dir {f} is an existing file" in assert_clean_error(code, err, argv=argv)
    code, err = run_cli(["train", "toy-mtsac", "--run-dir", str(f / "sub")])
    assert f"{f} is a file, not a directory" in assert_clean_error(code, err)
    for argv in (["train", "--resume", str(f)], ["eval", str(f)], ["report", str(f)]):
        code, err = run_cli(argv)
        assert f"{f} is a file, not a run directory" in assert_clean_error(code, err, argv=argv)


# --------------------------------------------------------------------------------------------
# Files of a run directory: config.yaml, metadata.json, eval/*.json, event files


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """A real, tiny run: no evaluation, and too short for any episode to finish."""
    run = tmp_path_factory.mktemp("runs") / "short"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", "toy-mtsac", "--run-dir", str(run), "--total-steps", "16",
                     "--warmup-steps", "8", "--agent.batch-size", "32", "--agent.actor-hidden",
                     "8", "--agent.critic-hidden", "8", "--replay.capacity", "64",
                     "--log.every", "8", "--eval.every", "0", "--eval.final", "false",
                     "--no-progress", "--device", "cpu"])
    assert code == 0, err.getvalue()
    return run


@pytest.fixture
def run_copy(short_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(short_run, dst)
    evals = dst / "eval"
    evals.mkdir(exist_ok=True)
    (evals / "step_000000000016.json").write_text(json.dumps(
        {"step": 16, "episodes_per_task": 1,
         "tasks": {f"goal-{k}": {"success": 0.0, "return": 1.0} for k in range(4)}}))
    return dst


def _run_commands(run: Path) -> list[list[str]]:
    return [["eval", str(run), "--episodes-per-task", "1"], ["report", str(run)],
            ["train", "--resume", str(run), "--total-steps", "32"]]


GARBAGE_CONFIGS = {
    "random bytes": bytes(range(256)) * 4,
    "not a mapping": b"- 1\n- 2\n",
    "a scalar": b"42\n",
    "empty": b"",
    "broken YAML": b"agent: {batch_size: [1, 2\n",
    "wrong types": b"seed: zero\n",
    "a section that is not a mapping": b"agent: 5\n",
    "unknown keys, one not a string": b"1: 2\nfoo: 3\n",
    "deeply nested": b"[" * 5000,
    "non-finite float": b"agent:\n  sac:\n    actor_lr: .nan\n",
}


@pytest.mark.parametrize("kind", list(GARBAGE_CONFIGS))
def test_garbage_config_yaml(stub_train, run_copy, kind):
    (run_copy / "config.yaml").write_bytes(GARBAGE_CONFIGS[kind])
    for argv in _run_commands(run_copy):
        code, err = run_cli(argv)
        line = assert_clean_error(code, err, str(run_copy / "config.yaml"), argv=argv)
        assert "is not a valid mtrl config" in line


def test_yaml_python_tag_is_refused_without_running_it(stub_train, run_copy, tmp_path):
    marker = tmp_path / "PWNED"
    (run_copy / "config.yaml").write_text(
        f'!!python/object/apply:os.system ["touch {marker}"]\n')
    for argv in _run_commands(run_copy):
        code, err = run_cli(argv)
        line = assert_clean_error(code, err, str(run_copy / "config.yaml"), argv=argv)
        assert "YAML tag !!python/object/apply:os.system" in line and "not allowed" in line
    assert not marker.exists()
    with pytest.raises(ConfigError, match="not allowed"):
        C.load_yaml("seed: !!python/object/new:os.system [echo]\n")


def test_yaml_is_only_ever_loaded_safely():
    for path in (REPO / "mtrl").rglob("*.py"):
        text = path.read_text()
        for unsafe in ("yaml.load(", "yaml.unsafe_load", "yaml.full_load", "Loader=",
                       "yaml.Loader", "UnsafeLoader", "FullLoader"):
            assert unsafe not in text, f"{path}: {unsafe}"


def test_config_yaml_numbers_as_yaml_1_1_strings_are_read():
    """PyYAML reads 1e-3 (no dot) as a string: a float field takes it, a bool does not."""
    text = C.dump_yaml(get_preset("toy-mtsac")).replace("actor_lr: 0.001", "actor_lr: 1e-3")
    assert C.load_yaml(text).agent.sac.actor_lr == 1e-3
    with pytest.raises(ConfigError, match=r"agent\.sac\.tau=True must be a number"):
        C.load_yaml(text.replace("tau: 0.005", "tau: true"))


@pytest.mark.parametrize(
    ("content", "expect"),
    [(b"{not json", "is not valid JSON"), (b"\xff\xfe\x00garbage", "is not valid JSON"),
     (b"[1, 2]", "must hold a JSON object, got list"),
     (b'{"benchmark": "mt10"}', "'benchmark' must be a JSON object")],
)
def test_garbage_metadata_json(stub_train, run_copy, content, expect):
    meta = run_copy / "metadata.json"
    meta.write_bytes(content)
    argvs = [["report", str(run_copy)]]
    if b"benchmark" not in content:  # resuming only needs the file to be a JSON object
        argvs.append(["train", "--resume", str(run_copy), "--total-steps", "32"])
    for argv in argvs:
        code, err = run_cli(argv)
        line = assert_clean_error(code, err, str(meta), argv=argv)
        assert expect in line


@pytest.mark.parametrize(
    ("content", "expect"),
    [("{", "is not valid JSON"), ("[]", "must hold a JSON object"),
     ('{"step": 1, "episodes_per_task": 1}', "has no per-task results"),
     ('{"step": 1, "episodes_per_task": 1, "tasks": {"goal-0": {"success": "yes"}}}',
      "no numeric 'success'"),
     ('{"tasks": {"goal-0": {"success": 1}}}', "lacks an integer 'step'")],
)
def test_garbage_eval_json(stub_train, run_copy, content, expect):
    f = run_copy / "eval" / "step_000000000016.json"
    f.write_text(content)
    code, err = run_cli(["report", str(run_copy)])
    assert expect in assert_clean_error(code, err, str(f))


def test_plot_and_report_of_a_run_without_the_data(stub_train, short_run, tmp_path):
    out = str(tmp_path / "p.png")
    code, err = run_cli(["plot", str(short_run), "--out", out, "--metric", "train-return"])
    line = assert_clean_error(code, err, str(short_run))
    assert "no train-return curves" in line and "no training episode has finished" in line
    code, err = run_cli(["plot", str(short_run), "--out", out])
    line = assert_clean_error(code, err, str(short_run))
    assert "no eval-success curves" in line and "not been evaluated" in line
    code, err = run_cli(["report", str(short_run)])
    assert "no evaluation results" in assert_clean_error(code, err, str(short_run))
    code, err = run_cli(["plot", str(short_run), "--out", str(tmp_path)])
    assert "is an existing directory" in assert_clean_error(code, err, "--out")
    assert not Path(out).exists()


# --------------------------------------------------------------------------------------------
# The same, in real processes


def test_in_real_processes(run_copy, tmp_path):
    marker = tmp_path / "PWNED"
    tagged = tmp_path / "tagged"
    shutil.copytree(run_copy, tagged)
    (tagged / "config.yaml").write_text(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    cases = [
        (["train", "toy-mtsac", "--agent.sac.init-alpha", "inf"],
         "agent.sac.init_alpha must be a finite number, got inf"),
        (["train", "toy-mtsac", "--seed", "99999999999999999999"], "seed=99999999999999999999"),
        (["train", "toy-mtsac", "--replay.capacity", "1e12"], "needs ~"),
        (["train", "toy-mtsac", "--seeds", ""], "--seeds='' lists no seeds"),
        (["eval", str(tagged)], f"{tagged / 'config.yaml'} is not a valid mtrl config"),
    ]
    procs = [(argv, expect, subprocess.Popen([sys.executable, "-m", "mtrl", *argv],
                                             cwd=tmp_path, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))
             for argv, expect in cases]
    for argv, expect, proc in procs:
        _, err = proc.communicate(timeout=120)
        line = assert_clean_error(proc.returncode, err, argv=argv)
        assert expect in line, (argv, line)
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()
