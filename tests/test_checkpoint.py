from __future__ import annotations

import json
import os
import pickle
import re

import pytest
import torch

from mtrl.checkpoint import (
    CheckpointError,
    CheckpointManager,
    _sha256,
    load_file,
    load_tensors,
    manifest_path,
    save_file,
    save_tensors,
)


def _state(step: int) -> dict:
    return {"step": step, "w": torch.full((3,), float(step)), "nested": {"lst": [1, 2.5, "x"]}}


def test_roundtrip(tmp_path):
    save_file(_state(3), tmp_path / "a.pt", step=3)
    out = load_file(tmp_path / "a.pt")
    assert out["step"] == 3 and torch.equal(out["w"], torch.full((3,), 3.0))
    assert out["nested"]["lst"] == [1, 2.5, "x"]
    assert json.loads(manifest_path(tmp_path / "a.pt").read_text())["step"] == 3


def test_truncated_checkpoint_is_refused_by_name_and_previous_still_loads(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    p1 = mgr.save(100, _state(100))
    p2 = mgr.save(200, _state(200))
    data = p2.read_bytes()
    p2.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(p2)):
        load_file(p2)
    assert load_file(p1)["step"] == 100


def test_modified_bytes_are_detected(tmp_path):
    p = tmp_path / "c.pt"
    save_file(_state(1), p)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_file(p)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_is_refused_even_with_a_matching_manifest(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"agent": _Evil()}, p)
    # an attacker who also rewrites the manifest still cannot get code executed
    manifest = {"format": "mtrl-checkpoint-v1", "file": p.name, "bytes": p.stat().st_size,
                "sha256": _sha256(p)}
    manifest_path(p).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_file(p)
    # a raw pickle (not a torch zip) is refused too
    q = tmp_path / "raw.pt"
    q.write_bytes(pickle.dumps({"x": _Evil()}))
    manifest_path(q).write_text(json.dumps({**manifest, "file": q.name,
                                            "bytes": q.stat().st_size, "sha256": _sha256(q)}))
    with pytest.raises(CheckpointError, match=str(q)):
        load_file(q)


def test_missing_manifest_means_incomplete(tmp_path):
    p = tmp_path / "d.pt"
    save_file(_state(1), p)
    manifest_path(p).unlink()
    with pytest.raises(CheckpointError, match="not completely written"):
        load_file(p)
    assert CheckpointManager(tmp_path).list() == []


def test_crash_during_write_keeps_previous(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save(10, _state(10))

    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        mgr.save(20, _state(20))
    monkeypatch.undo()
    assert [c.step for c in mgr.list()] == [10]
    assert load_file(mgr.latest().path)["step"] == 10
    assert not list(tmp_path.glob(".*tmp*"))


def test_keep_last_and_replay_only_with_latest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3, 4):
        mgr.save(step, _state(step), lambda p: save_tensors(p, {"obs": torch.zeros(2)}))
    assert [c.step for c in mgr.list()] == [3, 4]
    assert sorted(p.name for p in tmp_path.glob("replay_*")) == [
        "replay_000000000004.bin", "replay_000000000004.json"]
    assert mgr.latest().manifest["replay_file"] == "replay_000000000004.bin"


def test_raw_tensor_files_write_only_the_view_and_verify(tmp_path):
    big = torch.arange(4 * 100 * 3, dtype=torch.float32).view(4, 100, 3)
    view = big[:, :7]  # non-contiguous view of a larger buffer
    save_tensors(tmp_path / "t.bin", {"x": view, "n": torch.tensor([1, 2], dtype=torch.int64)})
    assert (tmp_path / "t.bin").stat().st_size == 4 * 7 * 3 * 4 + 2 * 8
    _, out = load_tensors(tmp_path / "t.bin")
    assert torch.equal(out["x"], view) and out["n"].tolist() == [1, 2]
    dest = torch.zeros(4, 50, 3)
    _, rest = load_tensors(tmp_path / "t.bin", into={"x": dest[:, :7]})
    assert torch.equal(dest[:, :7], view) and dest[:, 7:].abs().sum() == 0 and "x" not in rest
    with pytest.raises(CheckpointError, match="shape"):
        load_tensors(tmp_path / "t.bin", into={"x": dest[:, :6]})
    raw = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(raw[:-8])
    with pytest.raises(CheckpointError, match=re.escape("t.bin")):
        load_tensors(tmp_path / "t.bin")
