"""Atomic, verifiable checkpoints that load without unpickling arbitrary objects.

Each checkpoint is ``ckpt_<step>.pt`` (``torch.save`` of tensors and plain containers only) plus
a manifest ``ckpt_<step>.json`` with its size and SHA-256. Writes go to a temporary file that is
fsync'ed and atomically renamed, manifest last: a crash at any point leaves the previous
checkpoint intact, and a checkpoint without a manifest counts as never written.

Loading verifies the manifest (a truncated or modified file is refused, naming it) and uses
``torch.load(weights_only=True)``, so a file carrying a pickle payload is refused too.
"""

from __future__ import annotations

import builtins
import contextlib
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


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed with an OS error (disk full, file too large, permissions);
    the file it was writing was removed and earlier checkpoints are untouched."""


# Bounds on what a manifest may ask for before the file is read.
_MAX_MANIFEST_BYTES = 16 << 20
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_REPLAY_RE = re.compile(r"^replay_(\d+)\.bin$")
_DTYPES = {
    name: getattr(torch, name) for name in (
        "float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32",
        "int64", "bool",
    )
}


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
    except OSError as e:
        raise CheckpointWriteError(
            f"cannot write {path}: {e.strerror or e} (errno {e.errno}); nothing was replaced"
        ) from None
    except RuntimeError as e:  # torch.save wraps the OS error of its writer
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OSError) or "write" in str(e).lower():
            why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(e)
            raise CheckpointWriteError(f"cannot write {path}: {why}; nothing was replaced"
                                       ) from None
        raise
    finally:
        with contextlib.suppress(OSError):
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


def adopt_file(path: Path, **meta: Any) -> dict[str, Any]:
    """Write the missing manifest of an existing checkpoint file that has been checked by
    loading it (``load_file(path, verify=False)``); refuses when a manifest exists."""
    path = Path(path)
    if manifest_path(path).exists():
        raise CheckpointError(f"{path} already has a manifest; not replacing it")
    manifest = {
        "format": FORMAT,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "adopted": True,
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
                if row.numel() == 0:
                    continue
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
            dtype = _DTYPES[spec["dtype"]]
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
                if row.numel() == 0:
                    continue
                staging = row if row.is_contiguous() and row.device.type == "cpu" else \
                    torch.empty(row.shape, dtype=dtype)
                buf = staging.numpy().data.cast("B")
                if f.readinto(buf) != len(buf):
                    raise CheckpointError(f"{path}: unexpected end of file reading {name}")
                if staging is not row:
                    row.copy_(staging)
    return manifest, out


def _field(manifest: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in manifest:
        raise CheckpointError(f"manifest {where} has no {key!r} field")
    value = manifest[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise CheckpointError(f"manifest {where}: {key!r} has the wrong type "
                              f"({type(value).__name__})")
    return value


def _check_layout(manifest: dict[str, Any], mpath: Path) -> None:
    """A tensors manifest's layout: known dtypes, small non-negative shapes whose bytes match
    ``nbytes``, and every tensor inside the file's recorded size."""
    layout = _field(manifest, "layout", dict, mpath)
    total = manifest["bytes"]
    for name, spec in layout.items():
        if not isinstance(spec, dict):
            raise CheckpointError(f"manifest {mpath}: layout entry {name!r} is not a mapping")
        dtype = _DTYPES.get(spec.get("dtype"))  # type: ignore[arg-type]
        if dtype is None:
            raise CheckpointError(f"manifest {mpath}: unknown dtype {spec.get('dtype')!r} "
                                  f"for {name!r}")
        shape = spec.get("shape")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                           for d in shape)):
            raise CheckpointError(f"manifest {mpath}: invalid shape {shape!r} for {name!r}")
        offset, nbytes = spec.get("offset"), spec.get("nbytes")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (offset, nbytes)):
            raise CheckpointError(f"manifest {mpath}: invalid offset/nbytes for {name!r}")
        numel = 1
        for d in shape:
            numel *= d
        if numel * dtype.itemsize != nbytes or offset + nbytes > total:
            raise CheckpointError(
                f"manifest {mpath}: {name!r} of shape {shape} ({spec['dtype']}) does not fit "
                f"the {total} bytes of its file"
            )


def read_manifest(path: Path, fmt: str = FORMAT) -> dict[str, Any]:
    """The manifest of ``path``, validated before anything trusts it: a JSON object of bounded
    size, the expected format, naming ``path`` itself, with a byte count, a SHA-256, a replay
    file name of the form ``replay_<step>.bin`` (in the same directory) and, for raw tensors,
    a layout that fits the file. Raises CheckpointError naming the file and the problem."""
    path = Path(path)
    mpath = manifest_path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if not mpath.exists():
        raise CheckpointError(
            f"checkpoint {path} has no manifest {mpath.name}: it was not completely written"
        )
    try:
        if mpath.stat().st_size > _MAX_MANIFEST_BYTES:
            raise CheckpointError(f"manifest {mpath} is larger than a manifest can be")
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"manifest {mpath} of checkpoint {path} is unreadable: "
                              f"{' '.join(str(e).split())[:200]}") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"manifest {mpath} is not a JSON object")
    if manifest.get("format") != fmt:
        raise CheckpointError(f"{path}: unknown checkpoint format {manifest.get('format')!r}")
    if _field(manifest, "file", str, mpath) != path.name:
        raise CheckpointError(f"manifest {mpath} describes {manifest['file']!r}, not {path.name}")
    if _field(manifest, "bytes", int, mpath) < 0:
        raise CheckpointError(f"manifest {mpath}: negative 'bytes'")
    if not _SHA_RE.match(_field(manifest, "sha256", str, mpath)):
        raise CheckpointError(f"manifest {mpath}: 'sha256' is not a SHA-256 hex digest")
    replay = manifest.get("replay_file")
    if replay is not None and not (isinstance(replay, str) and _REPLAY_RE.match(replay)):
        raise CheckpointError(f"manifest {mpath}: replay_file {replay!r} is not a replay file "
                              "of this directory (replay_<step>.bin)")
    if fmt == TENSORS_FORMAT:
        _check_layout(manifest, mpath)
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
    newest checkpoint. Pruning deletes only what this run's timeline wrote and no longer needs:
    checkpoints older than the last ``keep_last`` and replay files older than the newest
    checkpoint's. Files that belong to another timeline (newer than a
    checkpoint a run resumes from, or a ``.pt`` without a valid manifest) are never deleted or
    overwritten: :meth:`set_aside` moves them to ``superseded-<time>/``.
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

    def _scan(self) -> tuple[builtins.list[CheckpointInfo], builtins.list[Path]]:
        """Complete checkpoints (a valid manifest), oldest first, and ``.pt`` files without
        one (not completely written, or their manifest was removed or damaged)."""
        good: builtins.list[CheckpointInfo] = []
        unverified: builtins.list[Path] = []
        if not self.dir.is_dir():
            return good, unverified
        for p in self.dir.iterdir():
            m = _CKPT_RE.match(p.name)
            if not m or not p.is_file():
                continue
            try:
                manifest = read_manifest(p)
            except CheckpointError:
                unverified.append(p)
                continue
            good.append(CheckpointInfo(int(m.group(1)), p, manifest))
        good.sort(key=lambda c: c.step)
        unverified.sort(key=_step_of)
        return good, unverified

    def list(self) -> list[CheckpointInfo]:
        """Complete checkpoints (file and valid manifest present), oldest first."""
        return self._scan()[0]

    def unverified(self) -> builtins.list[Path]:
        """Checkpoint files without a valid manifest, oldest first."""
        return self._scan()[1]

    def latest(self) -> CheckpointInfo | None:
        items = self.list()
        return items[-1] if items else None

    def set_aside(self, after_step: int) -> tuple[Path | None, builtins.list[str]]:
        """Move every checkpoint and replay file newer than ``after_step``, and every
        checkpoint without a valid manifest, into ``superseded-<time>/`` (a run resuming from
        step ``after_step`` would otherwise overwrite or prune them). Returns the folder and
        the names moved (None and [] when nothing was)."""
        if not self.dir.is_dir():
            return None, []
        moving: builtins.list[Path] = []
        unverified: set[Path] = set(self.unverified())
        for p in sorted(self.dir.iterdir()):
            if not p.is_file():
                continue
            m = _CKPT_RE.match(p.name) or _REPLAY_RE.match(p.name)
            stem_match = re.match(r"^(ckpt|replay)_(\d+)\.json$", p.name)
            step = int(m.group(1)) if m else int(stem_match.group(2)) if stem_match else None
            if step is None:
                continue
            newer = step > after_step
            orphan = p in unverified or manifest_path(p) in {manifest_path(u) for u in unverified}
            if newer or orphan:
                moving.append(p)
        if not moving:
            return None, []
        dest = self.dir / time.strftime("superseded-%Y%m%d-%H%M%S")
        k = 1
        while dest.exists():
            dest = self.dir / (time.strftime("superseded-%Y%m%d-%H%M%S") + f"-{k}")
            k += 1
        dest.mkdir()
        for p in moving:
            os.replace(p, dest / p.name)
        _fsync_dir(self.dir)
        return dest, [p.name for p in moving]

    def _prune(self) -> None:
        items = self.list()
        if not items:
            return
        newest = items[-1].step
        for info in items[: -self.keep_last] if self.keep_last > 0 else []:
            for p in (info.path, manifest_path(info.path)):
                p.unlink(missing_ok=True)
        kept = {items[-1].manifest.get("replay_file")}
        for p in self.dir.glob("replay_*.bin"):
            m = _REPLAY_RE.match(p.name)
            if m and int(m.group(1)) < newest and p.name not in kept:
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


def _step_of(path: Path) -> int:
    m = _CKPT_RE.match(path.name)
    return int(m.group(1)) if m else -1
