"""Weights & Biases as a second logging backend (``log.wandb``), offline, no network."""

from __future__ import annotations

import json
import re
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mtrl import config as C
from mtrl.cli import split_overrides
from mtrl.errors import ConfigError
from mtrl.logging import WANDB_RUN_ID_FILE, RunLogger
from mtrl.runner import train
from tests.conftest import tiny_toy_config

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

MISSING = "log.wandb needs the wandb package: pip install 'mtrl[wandb]'"


@pytest.fixture(autouse=True)
def _wandb_offline_env(tmp_path, monkeypatch):
    """No network, no output, nothing written outside tmp_path."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_RESUME", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))


def _records(path: Path) -> list[Any]:
    """The protobuf records of an offline ``run-<id>.wandb`` file (a LevelDB-style log: a 7-byte
    ``:W&B`` header, then 32 KiB blocks of records, each with a 7-byte crc/length/type header;
    type 1 is a whole record, 2/3/4 its first/middle/last fragments)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            pos += left
            continue
        if pos + 7 + n > len(data):
            break  # still being written
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def _read_run(path: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Run id/name/project, config and history rows of an offline run file. ``run.finish()``
    can return before W&B's service process has written the file, so wait for its exit
    record."""
    deadline = time.monotonic() + timeout
    while True:
        records = _records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{path} was not completed"
        time.sleep(0.1)
    run: dict[str, Any] = {"config": {}, "history": []}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run.update(id=rec.run.run_id, name=rec.run.display_name, project=rec.run.project)
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
    return run


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def _wandb_config(**changes: Any) -> C.TrainConfig:
    return tiny_toy_config(**{"log__wandb": "mtrl-test", "log__wandb_mode": "offline", **changes})


def test_offline_run_mirrors_tensorboard_tags(tmp_path):
    run_dir = tmp_path / "toy-run"
    train(_wandb_config(), run_dir)
    run_id = (run_dir / WANDB_RUN_ID_FILE).read_text().strip()
    files = _offline_runs(run_dir)
    assert [f.name for f in files] == [f"run-{run_id}.wandb"]
    run = _read_run(files[0])
    assert (run["id"], run["name"], run["project"]) == (run_id, "toy-run", "mtrl-test")
    # The flattened mtrl config is the W&B config.
    assert run["config"]["total_steps"] == 800
    assert run["config"]["log.wandb_mode"] == "offline"
    assert run["config"]["agent.actor_hidden"] == [16, 16]
    rows = run["history"]
    tags = set().union(*rows)
    for tag in ("loss/critic", "loss/actor", "perf/env_steps_per_sec", "train/success_mean"):
        assert tag in tags, tag
    assert rows[0]["config/_type"] == "html-file"  # the config text, as on TensorBoard
    assert rows[0]["env_step"] == 0
    assert any(t.startswith("train/episode_return/") for t in tags)
    assert any(t.startswith("alpha/") for t in tags)
    # Every row carries its env step; W&B's own row counter only increases.
    assert all("env_step" in r for r in rows)
    assert max(r["env_step"] for r in rows) == 800
    steps = [r["_step"] for r in rows]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    # Every TensorBoard scalar, at the same env steps with the same values.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    tb_tags = ea.Tags()["scalars"]
    assert "loss/critic" in tb_tags and "train/success_mean" in tb_tags
    for tag in tb_tags:
        tb = sorted((e.step, e.value) for e in ea.Scalars(tag))
        wb = sorted((r["env_step"], r[tag]) for r in rows if tag in r)
        assert [s for s, _ in wb] == [s for s, _ in tb], tag
        assert [v for _, v in wb] == pytest.approx([v for _, v in tb], rel=1e-6), tag


def test_values_logged_out_of_order_are_all_kept(tmp_path):
    run_dir = tmp_path / "r"
    logger = RunLogger(run_dir, ["a", "b"], wandb_project="mtrl-test", wandb_mode="offline")
    logger.scalar("loss/critic", 1.0, 100)
    logger.per_task("alpha", [0.5, 0.25], 100)
    logger.scalar("train/episode_return/a", 3.0, 60)  # an episode that ended earlier
    logger.scalar("train/episode_return/a", 4.0, 60)  # same tag twice at one step
    logger.scalar("loss/critic", 2.0, 200)
    logger.matrix_image("grad/cosine/critic", [[1.0, -1.0], [-1.0, 1.0]], 200)
    logger.close()
    rows = _read_run(_offline_runs(run_dir)[0])["history"]
    got = [{k: v for k, v in r.items() if not k.startswith("_") and "/" in k and
            not k.startswith("grad/cosine/critic/")} for r in rows]
    assert got == [
        {"loss/critic": 1.0, "alpha/a": 0.5, "alpha/b": 0.25},
        {"train/episode_return/a": 3.0},
        {"train/episode_return/a": 4.0},
        {"loss/critic": 2.0},
    ]
    assert [r["env_step"] for r in rows] == [100, 60, 60, 200]
    assert rows[-1]["grad/cosine/critic/_type"] == "image-file"


def test_resume_continues_the_same_wandb_run(tmp_path):
    run_dir = tmp_path / "r"
    train(_wandb_config(total_steps=400), run_dir)
    run_id = (run_dir / WANDB_RUN_ID_FILE).read_text().strip()
    resumed = train(_wandb_config(), run_dir, resume=True)
    assert resumed.env_steps == 800
    assert (run_dir / WANDB_RUN_ID_FILE).read_text().strip() == run_id
    files = _offline_runs(run_dir)
    assert len(files) == 2  # one offline directory per process; `wandb sync` joins them
    first, second = (_read_run(f) for f in files)
    assert first["id"] == second["id"] == run_id
    assert max(r["env_step"] for r in first["history"]) == 400
    assert min(r["env_step"] for r in second["history"]) > 400
    assert max(r["env_step"] for r in second["history"]) == 800
    assert second["config"]["total_steps"] == 800  # a resumable field changed


def test_missing_package_is_a_one_line_error_before_any_env(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails
    cfg = _wandb_config()
    with pytest.raises(ConfigError) as e:
        C.validate(cfg)
    assert str(e.value) == MISSING
    import mtrl.runner as runner

    def no_env(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an env was built")

    monkeypatch.setattr(runner, "make_env", no_env)
    with pytest.raises(ConfigError, match="pip install 'mtrl\\[wandb\\]'"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    # Evaluation-only validation does not need the package; neither does a disabled mode.
    C.validate(cfg, memory=False)
    C.validate(_wandb_config(log__wandb_mode="disabled"))
    # RunLogger itself says the same if the check was bypassed.
    with pytest.raises(ConfigError, match=re.escape(MISSING)):
        RunLogger(tmp_path / "x", ["a"], wandb_project="p", wandb_mode="offline")


def test_wandb_is_never_imported_when_off(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import of wandb would raise
    res = train(tiny_toy_config(total_steps=400), tmp_path / "off")
    assert res.env_steps == 400
    res = train(_wandb_config(total_steps=400, log__wandb_mode="disabled"), tmp_path / "dis")
    assert res.env_steps == 400
    for d in ("off", "dis"):
        assert not (tmp_path / d / "wandb").exists()
        assert not (tmp_path / d / WANDB_RUN_ID_FILE).exists()


def test_invalid_mode_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        C.validate(_wandb_config(log__wandb_mode="cloud"))
    msg = str(e.value)
    assert "\n" not in msg and "log.wandb_mode" in msg and "offline" in msg


def test_command_line_overrides():
    rest, overrides = split_overrides(
        ["toy-mtsac", "--log.wandb", "my-project", "--log.wandb-mode", "offline"])
    assert rest == ["toy-mtsac"]
    cfg = tiny_toy_config()
    for key, value in overrides:
        C.set_override(cfg, key, value)
        assert C.unused_field_message(cfg, C.resolve_path(key, cfg)) is None
    assert (cfg.log.wandb, cfg.log.wandb_mode) == ("my-project", "offline")
    C.validate(cfg)
