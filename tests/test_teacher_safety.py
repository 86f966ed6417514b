"""A stable-baselines3 teacher .zip never executes code: the loader reads the ``data`` JSON as
plain JSON and ``policy.pth`` with ``torch.load(weights_only=True)``, rebuilds the policy from
plain fields and weights, and refuses (one line naming the file and the field) what only a pickle
holds. Hostile zips here carry pickles whose ``__reduce__`` creates a marker file."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distill import CONT, DISC, OBS, _tmp_sb3

from mtrl import sb3 as mtrl_sb3
from mtrl.errors import ConfigError
from mtrl.teachers import SB3Teacher, load_teacher

sb3 = pytest.importorskip("stable_baselines3")

ALGOS = [("ppo", True), ("a2c", True), ("dqn", True), ("sac", False), ("ppo", False)]


class _Touch:
    """Unpickling this object runs ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(_Touch(marker))).decode()


def _rewrite(src: str | Path, dst: Path, *, data: dict | None = None,
             entries: dict[str, bytes | None] | None = None) -> Path:
    """A copy of the zip ``src`` with its ``data`` record replaced by ``data`` and the entries in
    ``entries`` replaced (``None``: removed)."""
    entries = dict(entries or {})
    if data is not None:
        entries["data"] = json.dumps(data, indent=4).encode()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in entries:
                new = entries.pop(info.filename)
                if new is not None:
                    zout.writestr(info.filename, new)
            else:
                zout.writestr(info, zin.read(info))
        for name, new in entries.items():
            if new is not None:
                zout.writestr(name, new)
    return dst


def _data(path: str | Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("data"))


def _forge(src: str | Path, dst: Path, marker: Path, fields: list[str], *,
           keep_plain: bool) -> Path:
    """``src`` with a hostile pickle as the ``:serialized:`` value of each of ``fields``. With
    ``keep_plain`` the plain fields SB3 stores next to a pickle stay (the zip looks exactly as
    SB3 writes it); without, only ``:type:`` and ``:serialized:`` remain. A field that is plain
    JSON in ``src`` becomes a pickle record."""
    data = _data(src)
    for f in fields:
        old = data.get(f)
        rec = dict(old) if isinstance(old, dict) and keep_plain else {}
        rec[":type:"] = old.get(":type:", "<class 'dict'>") if isinstance(old, dict) \
            else str(type(old))
        rec[":serialized:"] = _payload(marker)
        data[f] = rec
    return _rewrite(src, dst, data=data)


def _refusal(fn, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg == msg.strip(), msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def _spaces(discrete: bool) -> dict:
    return dict(obs_space=OBS, action_space=DISC if discrete else CONT)


def _probe_obs() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.5, 1.5, (64, 2)).astype(np.float32)


# ----------------------------------------------------------------------------- the payload
def test_the_forged_zip_is_hostile_to_an_unpickling_loader(tmp_path):
    """Control: the payload creates its marker when unpickled, and SB3's own loader (which
    unpickles the ``:serialized:`` values) runs it; mtrl's loader does not."""
    marker = tmp_path / "MARKER"
    pickle.loads(base64.b64decode(_payload(marker)))
    assert marker.exists()
    marker.unlink()
    forged = _forge(_tmp_sb3("ppo", discrete=True), tmp_path / "f.zip", marker,
                    ["observation_space"], keep_plain=True)
    SB3Teacher(forged, **_spaces(True))
    assert not marker.exists()
    with contextlib.suppress(Exception):  # whatever the unpickled objects break afterwards
        sb3.PPO.load(forged, device="cpu")
    assert marker.exists()


# ----------------------------------------------------------------------------- data pickles
@pytest.mark.parametrize(("algo", "discrete"), ALGOS)
def test_every_pickle_poisoned_loads_from_plain_fields_and_acts_identically(
        tmp_path, algo, discrete):
    honest = _tmp_sb3(algo, discrete=discrete)
    marker = tmp_path / "MARKER"
    pickled = [k for k, v in _data(honest).items() if isinstance(v, dict) and ":serialized:" in v]
    assert {"policy_class", "observation_space", "action_space", "lr_schedule"} <= set(pickled)
    forged = _forge(honest, tmp_path / "forged.zip", marker, pickled, keep_plain=True)
    teacher = load_teacher(forged, "goal-1", device="cpu", **_spaces(discrete))
    reference = load_teacher(honest, "goal-1", device="cpu", **_spaces(discrete))
    model = getattr(sb3, algo.upper()).load(honest, device="cpu")
    obs = _probe_obs()
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(teacher.act(obs, deterministic=True), expected)
    a, b = teacher.output(torch.as_tensor(obs)), reference.output(torch.as_tensor(obs))
    for name in ("logits", "mean", "log_std", "features"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None
        else:
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not marker.exists()


NEEDED = ["policy_class", "observation_space", "action_space", "policy_kwargs"]
UNUSED = ["lr_schedule", "clip_range", "rollout_buffer_class", "learning_rate", "_last_obs",
          "ep_info_buffer", "seed", "gamma"]


@pytest.mark.parametrize("keep_plain", [True, False], ids=["plain-kept", "pickle-only"])
@pytest.mark.parametrize("field", [*NEEDED, *UNUSED, "use_sde"])
def test_a_pickle_in_any_field_never_runs(tmp_path, field, keep_plain):
    """Each field poisoned alone (PPO, discrete): the teacher loads from the plain fields and
    acts like the honest zip, or is refused with one line naming the field; the marker never
    appears."""
    honest = _tmp_sb3("ppo", discrete=True)
    marker = tmp_path / "MARKER"
    forged = _forge(honest, tmp_path / "forged.zip", marker, [field], keep_plain=keep_plain)
    if field in NEEDED and not keep_plain:
        _refusal(lambda: SB3Teacher(forged, **_spaces(True)), str(forged), field)
    elif field == "use_sde":
        _refusal(lambda: SB3Teacher(forged, **_spaces(True)), str(forged), "'use_sde'")
    else:  # an unused field, or a needed one with its plain fields as SB3 writes them
        teacher = SB3Teacher(forged, **_spaces(True))
        obs = _probe_obs()
        expected, _ = sb3.PPO.load(honest, device="cpu").predict(obs, deterministic=True)
        np.testing.assert_array_equal(teacher.act(obs, deterministic=True), expected)
    assert not marker.exists()


def test_plain_fields_that_contradict_the_weights_are_refused(tmp_path):
    honest = _tmp_sb3("ppo", discrete=True)
    data = _data(honest)
    data["action_space"]["n"] = "4"
    bad = _rewrite(honest, tmp_path / "n.zip", data=data)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(bad), "policy.pth", "action_net")
    data = _data(honest)
    data["policy_kwargs"] = {"activation_fn": "<class 'evil.module.Payload'>"}
    bad = _rewrite(honest, tmp_path / "act.zip", data=data)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(bad), "policy_kwargs.activation_fn")
    data = _data(honest)
    data["observation_space"]["low"] = "[-1.5 -1.5 -1.5]"
    bad = _rewrite(honest, tmp_path / "low.zip", data=data)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(bad), "observation_space.low")
    data = _data(honest)
    data["policy_class"]["__module__"] = "evil.policies"
    bad = _rewrite(honest, tmp_path / "cls.zip", data=data)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(bad), "policy_class", "evil.policies")


def test_spaces_larger_than_the_weights_are_refused_before_building(tmp_path):
    """A forged space cannot make the loader build modules larger than the weights read."""
    honest = _tmp_sb3("ppo", discrete=True)
    data = _data(honest)
    data["observation_space"].update(_shape=[4_000_000], low_repr="-1.5", high_repr="1.5")
    bad = _rewrite(honest, tmp_path / "obs.zip", data=data)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(bad), "mlp_extractor.policy_net.0.weight",
             "(16, 4000000)")
    data = _data(honest)
    data["action_space"]["n"] = "1000000"
    bad = _rewrite(honest, tmp_path / "act.zip", data=data)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(bad), "action_net.weight", "(1000000, 16)")
    data = _data(honest)
    data["observation_space"].update(_shape=[1 << 30])
    bad = _rewrite(honest, tmp_path / "huge.zip", data=data)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(bad), "observation_space", "elements")


def test_activation_is_read_from_the_plain_policy_kwargs(tmp_path):
    from mtrl.envs.toy import PointReachTaskEnv

    env = PointReachTaskEnv(3, 1, discrete=True, seed=0)
    model = sb3.PPO("MlpPolicy", env, seed=0, device="cpu", policy_kwargs=dict(
        net_arch=dict(pi=[8], vf=[4, 4]), activation_fn=torch.nn.ELU))
    model.save(tmp_path / "elu.zip")
    assert ":serialized:" in _data(tmp_path / "elu.zip")["policy_kwargs"]
    loaded = mtrl_sb3.load_sb3_policy(tmp_path / "elu.zip")
    assert str(loaded.policy).split("\n", 1)[1] == str(model.policy).split("\n", 1)[1]
    obs = _probe_obs()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True),
                                  model.predict(obs, deterministic=True)[0])


# ----------------------------------------------------------------------------- weights, entries
def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["random", "pickle-reduce", "torch-reduce", "not-tensors",
                                  "empty"])
def test_a_malformed_policy_pth_is_refused(tmp_path, kind):
    marker = tmp_path / "MARKER"
    honest = _tmp_sb3("ppo", discrete=True)
    raw = {
        "random": np.random.default_rng(0).bytes(4096),
        "pickle-reduce": pickle.dumps({"action_net.weight": _Touch(marker)}, protocol=2),
        "torch-reduce": _torch_bytes({"action_net.weight": _Touch(marker)}),
        "not-tensors": _torch_bytes({"action_net.weight": [1.0, 2.0]}),
        "empty": b"",
    }[kind]
    bad = _rewrite(honest, tmp_path / "bad.zip", entries={"policy.pth": raw})
    _refusal(lambda: SB3Teacher(bad, **_spaces(True)), str(bad), "'policy.pth'")
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["data", "policy.pth"])
def test_a_missing_entry_is_refused(tmp_path, entry):
    bad = _rewrite(_tmp_sb3("ppo", discrete=True), tmp_path / "bad.zip",
                   entries={entry: None})
    _refusal(lambda: SB3Teacher(bad, **_spaces(True)), str(bad), f"no '{entry}' entry")


@pytest.mark.parametrize("raw", [b"\x80\x04not json", b"[1, 2]", b"[" * 100_000],
                         ids=["binary", "a-list", "deep"])
def test_a_data_entry_that_is_not_a_json_object_is_refused(tmp_path, raw):
    bad = _rewrite(_tmp_sb3("ppo", discrete=True), tmp_path / "bad.zip", entries={"data": raw})
    _refusal(lambda: SB3Teacher(bad, **_spaces(True)), str(bad), "'data'")


def test_not_a_zip_is_refused(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_bytes(pickle.dumps(_Touch(tmp_path / "MARKER")))
    _refusal(lambda: load_teacher(bad, "goal-0", **_spaces(True)), str(bad), "not a zip")
    assert not (tmp_path / "MARKER").exists()


def test_sizes_are_bounded(tmp_path, monkeypatch):
    honest = _tmp_sb3("ppo", discrete=True)
    monkeypatch.setattr(mtrl_sb3, "MAX_DATA_BYTES", 1000)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(honest), "'data' entry is", "limit 1000")
    monkeypatch.undo()
    monkeypatch.setattr(mtrl_sb3, "MAX_WEIGHTS_BYTES", 1000)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(honest), "'policy.pth' entry is", "limit 1000")
    monkeypatch.undo()
    monkeypatch.setattr(mtrl_sb3, "MAX_ZIP_ENTRIES", 3)
    _refusal(lambda: mtrl_sb3.load_sb3_policy(honest), "entries")
    monkeypatch.undo()
    # a deflated 'data' entry whose directory record claims 10 bytes: never read past the
    # claim and the limit; the mismatch is a refusal
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(honest) as zin, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as z:
        for info in zin.infolist():
            z.writestr(info.filename, zin.read(info))
    raw = bytearray(big.read_bytes())
    at = raw.find(b"PK\x01\x02")
    while raw[at + 46:at + 50] != b"data":
        at = raw.find(b"PK\x01\x02", at + 4)
    struct.pack_into("<I", raw, at + 24, 10)  # uncompressed size
    big.write_bytes(bytes(raw))
    _refusal(lambda: mtrl_sb3.load_sb3_policy(big), str(big), "'data'")


# ----------------------------------------------------------------------------- the CLI
def _mtrl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtrl", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_cli_distill_never_runs_a_teacher_pickle(tmp_path):
    """`mtrl distill` in a real process: teachers whose every pickle is hostile but whose plain
    fields are intact train a student; a teacher whose observation space is only a pickle is
    refused on ``--resume`` with one line and exit status 2. No marker, no traceback."""
    marker = tmp_path / "MARKER"
    honest = _tmp_sb3("ppo", discrete=True)
    pickled = [k for k, v in _data(honest).items() if isinstance(v, dict) and ":serialized:" in v]
    teachers = tmp_path / "teachers"
    teachers.mkdir()
    for k in range(3):
        _forge(honest, teachers / f"goal-{k}.zip", marker, pickled, keep_plain=True)
    run = tmp_path / "run"
    done = _mtrl("distill", "toy-distill", "--teachers", str(teachers), "--env.num-tasks", "3",
                 "--agent.batch-size", "48", "--run-dir", str(run), "--no-progress",
                 "--total-steps", "240", "--warmup-steps", "120", "--eval.every", "0",
                 "--eval.episodes-per-task", "1", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not marker.exists()

    _forge(honest, teachers / "goal-1.zip", marker, ["observation_space"], keep_plain=False)
    resumed = _mtrl("distill", "--resume", str(run), "--total-steps", "360", "--no-progress",
                    cwd=tmp_path)
    assert resumed.returncode == 2, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    errors = [ln for ln in resumed.stderr.splitlines() if ln.startswith("mtrl: error:")]
    assert len(errors) == 1, resumed.stderr
    assert "goal-1.zip" in errors[0] and "'observation_space'" in errors[0], errors[0]
    assert not marker.exists()


def test_cli_distill_refuses_a_malformed_teacher_in_one_line(tmp_path):
    marker = tmp_path / "MARKER"
    honest = _tmp_sb3("ppo", discrete=True)
    teachers = tmp_path / "teachers"
    teachers.mkdir()
    for k in range(3):
        shutil.copy(honest, teachers / f"goal-{k}.zip")
    _rewrite(honest, teachers / "goal-2.zip",
             entries={"policy.pth": _torch_bytes({"action_net.weight": _Touch(marker)})})
    done = _mtrl("distill", "toy-distill", "--teachers", str(teachers), "--env.num-tasks", "3",
                 "--agent.batch-size", "48", "--run-dir", str(tmp_path / "run"),
                 "--no-progress", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("mtrl: error:")]
    assert len(errors) == 1 and "goal-2.zip" in errors[0] and "'policy.pth'" in errors[0], \
        done.stderr
    assert not marker.exists()
