"""Atomic, verifiable checkpoints that load without unpickling arbitrary objects.

Each checkpoint is ``ckpt_<step>.pt`` (``torch.save`` of tensors and plain containers only) plus
a manifest ``ckpt_<step>.json`` with its size and SHA-256. Writes go to a temporary file that is
fsync'ed and atomically renamed, manifest last: a crash at any point leaves the previous
checkpoint intact, and a checkpoint without a manifest counts as never written.

Loading verifies the manifest (a truncated or modified file is refused, naming it) and uses
``torch.load(weights_only=True)``, so a file carrying a pickle payload is refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = "mtrl-checkpoint-v1"
TENSORS_FORMAT = "mtrl-tensors-v1"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or unsafe. The message names the file."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))


def manifest_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_file(obj: dict[str, Any], path: Path, **meta: Any) -> dict[str, Any]:
    """Atomically write ``obj`` to ``path`` and then its manifest; return the manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, lambda f: torch.save(obj, f))
    manifest = {
        "format": FORMAT,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **meta,
    }
    atomic_write_text(manifest_path(path), json.dumps(manifest, indent=2))
    return manifest


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], **meta: Any) -> dict[str, Any]:
    """Write tensors as raw little-endian bytes, row by row (no pickle, no full-size copy: a
    view of a larger buffer writes only its own elements), then a manifest with the layout."""
    path = Path(path)
    layout: dict[str, dict[str, Any]] = {}
    h = hashlib.sha256()

    def write(f: Any) -> None:
        offset = 0
        for name, t in tensors.items():
            t = t.detach()
            nbytes = t.numel() * t.element_size()
            layout[name] = {"dtype": str(t.dtype).removeprefix("torch."),
                            "shape": list(t.shape), "offset": offset, "nbytes": nbytes}
            rows = [t] if t.dim() == 0 or t.is_contiguous() else list(t.unbind(0))
            for row in rows:
                data = row.contiguous().cpu().numpy().data.cast("B")
                h.update(data)
                f.write(data)
            offset += nbytes

    _atomic_write_bytes(path, write)
    manifest = {
        "format": TENSORS_FORMAT,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": h.hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "layout": layout,
        **meta,
    }
    atomic_write_text(manifest_path(path), json.dumps(manifest, indent=2))
    return manifest


def load_tensors(
    path: Path, into: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a file written by :func:`save_tensors` after verifying its size and SHA-256.

    Tensors named in ``into`` are read directly into those (CPU or device) views, which must
    have the saved shape; the others are returned as new CPU tensors.
    """
    path = Path(path)
    manifest = read_manifest(path, fmt=TENSORS_FORMAT)
    size = path.stat().st_size
    if size != manifest["bytes"]:
        raise CheckpointError(
            f"{path} is corrupt: {size} bytes on disk, {manifest['bytes']} written (truncated)"
        )
    if _sha256(path) != manifest["sha256"]:
        raise CheckpointError(f"{path} is corrupt: its SHA-256 does not match its manifest")
    into = into or {}
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        for name, spec in manifest["layout"].items():
            dtype = getattr(torch, spec["dtype"], None)
            if not isinstance(dtype, torch.dtype):
                raise CheckpointError(f"{path}: unknown dtype {spec['dtype']!r} for {name}")
            shape = tuple(spec["shape"])
            dest = into.get(name)
            if dest is None:
                dest = torch.empty(shape, dtype=dtype)
                out[name] = dest
            elif tuple(dest.shape) != shape or dest.dtype != dtype:
                raise CheckpointError(
                    f"{path}: {name} has shape {shape} ({spec['dtype']}) in the file, "
                    f"{tuple(dest.shape)} ({dest.dtype}) expected"
                )
            f.seek(spec["offset"])
            rows = [dest] if dest.dim() == 0 else list(dest.unbind(0))
            for row in rows:
                staging = row if row.is_contiguous() and row.device.type == "cpu" else \
                    torch.empty(row.shape, dtype=dtype)
                buf = staging.numpy().data.cast("B")
                if f.readinto(buf) != len(buf):
                    raise CheckpointError(f"{path}: unexpected end of file reading {name}")
                if staging is not row:
                    row.copy_(staging)
    return manifest, out


def read_manifest(path: Path, fmt: str = FORMAT) -> dict[str, Any]:
    path = Path(path)
    mpath = manifest_path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if not mpath.exists():
        raise CheckpointError(
            f"checkpoint {path} has no manifest {mpath.name}: it was not completely written"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"manifest {mpath} of checkpoint {path} is unreadable: {e}") from e
    if manifest.get("format") != fmt:
        raise CheckpointError(f"{path}: unknown checkpoint format {manifest.get('format')!r}")
    return manifest


def load_file(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint file written by :func:`save_file`, on the CPU."""
    path = Path(path)
    if verify:
        manifest = read_manifest(path)
        size = path.stat().st_size
        if size != manifest["bytes"]:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: {size} bytes on disk, {manifest['bytes']} "
                "written (truncated or modified)"
            )
        if _sha256(path) != manifest["sha256"]:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: its SHA-256 does not match its manifest "
                "(modified after it was written)"
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it carries pickled Python objects other than tensors "
            f"and plain containers, which could run arbitrary code ({e})"
        ) from e
    except Exception as e:  # zip/format errors from torch
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dict")
    return obj


@dataclass
class CheckpointInfo:
    step: int
    path: Path
    manifest: dict[str, Any]


class CheckpointManager:
    """``run_dir/checkpoints``: save, list, keep the last N, and find the latest complete one.

    The replay buffer (large) is stored as raw tensors, ``replay_<step>.bin``, only with the
    newest checkpoint.
    """

    def __init__(self, directory: Path, keep_last: int = 3) -> None:
        self.dir = Path(directory)
        self.keep_last = keep_last

    def path_for(self, step: int) -> Path:
        return self.dir / f"ckpt_{step:012d}.pt"

    def save(
        self,
        step: int,
        state: dict[str, Any],
        write_replay: Callable[[Path], Any] | None = None,
    ) -> Path:
        """Save ``state`` as checkpoint ``step``; ``write_replay(path)`` writes the buffer."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"step": step}
        if write_replay is not None:
            rpath = self.dir / f"replay_{step:012d}.bin"
            write_replay(rpath)
            meta["replay_file"] = rpath.name
        path = self.path_for(step)
        save_file(state, path, kind="train_state", **meta)
        self._prune()
        return path

    def list(self) -> list[CheckpointInfo]:
        """Complete checkpoints (file and manifest present), oldest first."""
        out: list[CheckpointInfo] = []
        if not self.dir.exists():
            return out
        for p in self.dir.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and manifest_path(p).exists():
                try:
                    manifest = json.loads(manifest_path(p).read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                out.append(CheckpointInfo(int(m.group(1)), p, manifest))
        return sorted(out, key=lambda c: c.step)

    def latest(self) -> CheckpointInfo | None:
        items = self.list()
        return items[-1] if items else None

    def _prune(self) -> None:
        items = self.list()
        for info in items[: -self.keep_last]:
            for p in (info.path, manifest_path(info.path)):
                p.unlink(missing_ok=True)
        keep_replay = items[-1].manifest.get("replay_file") if items else None
        for p in self.dir.glob("replay_*.bin"):
            if p.name != keep_replay:
                p.unlink(missing_ok=True)
                manifest_path(p).unlink(missing_ok=True)
        for p in self.dir.glob(".*.tmp-*"):
            # Leftovers of a crashed write by a process that no longer runs.
            try:
                pid = int(p.name.rsplit("-", 1)[1])
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                p.unlink(missing_ok=True)
            except PermissionError:
                pass
