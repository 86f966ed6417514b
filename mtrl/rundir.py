"""Everything about a run directory, in one place.

A run directory (``runs/<name>/``) holds ``config.yaml`` (the fully resolved config),
``metadata.json``, TensorBoard event files, ``checkpoints/`` (verified, atomically written
checkpoints, see :mod:`mtrl.checkpoint`) and ``eval/``. Evaluation, resume, videos, plots,
reports and distillation teachers read runs through :class:`RunDir`; nothing else parses these
files or rebuilds an agent from a checkpoint.

Errors: :class:`ResumeError` (not a run, no checkpoint, a checkpoint of other tasks, a config that
cannot resume this run) and :class:`mtrl.checkpoint.CheckpointError` (a corrupt, incomplete or
unsafe file); both messages name the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import torch

from mtrl import config as C
from mtrl.checkpoint import (
    CheckpointError,
    CheckpointManager,
    adopt_file,
    load_file,
    manifest_path,
    read_manifest,
)
from mtrl.config import ConfigError, TrainConfig


class ResumeError(RuntimeError):
    """A run directory cannot be resumed, evaluated or loaded as asked (the message says why)."""


class RunLockedError(ResumeError):
    """Another process (or this one) is writing to the run directory."""


class RunLock:
    """One writer per run directory: an advisory POSIX record lock (``fcntl.lockf``) on
    ``<run>/.mtrl.lock``, held for the life of a training process. The kernel releases it when
    the process exits or dies (kill -9 included); forked env workers do not inherit it. The
    file records the holder's PID, host, start time and command, so a refused writer can say
    who holds the run. A second lock on the same directory from the same process is refused
    too (record locks do not conflict within one process)."""

    FILE = ".mtrl.lock"
    _held: ClassVar[set[str]] = set()

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.FILE
        self._fd: int | None = None
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _key(self) -> str:
        return str(self.run_dir.resolve())

    def holder(self) -> str:
        """Who holds the lock, as written in the lock file ('another process' if unreadable)."""
        try:
            info = json.loads(self.path.read_text())
            return (f"PID {int(info['pid'])} on {str(info['host'])[:100]} "
                    f"(since {str(info['started'])[:40]})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self) -> RunLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ResumeError(f"run directory {self.run_dir} is a file, not a directory")
        if self._key() in RunLock._held:
            raise RunLockedError(f"run directory {self.run_dir} is already being written by "
                                 f"this process (PID {os.getpid()})")
        self._created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ResumeError(f"cannot use run directory {self.run_dir}: "
                              f"{e.strerror or e}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise RunLockedError(
                    f"run directory {self.run_dir} is in use by {self.holder()}; wait for that "
                    "run to finish or stop it, or choose another --run-dir") from None
            raise ResumeError(f"cannot lock {self.path}: {e.strerror or e}") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv[:20]}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        RunLock._held.add(self._key())
        return self

    def release(self, *, remove_if_unused: bool = False) -> None:
        """Release the lock. ``remove_if_unused``: when this lock created the run directory
        and nothing else was written into it, remove the lock file and the directory."""
        if self._fd is None:
            return
        RunLock._held.discard(self._key())
        if remove_if_unused and self._created_dir:
            with contextlib.suppress(OSError):
                if [p.name for p in self.run_dir.iterdir()] == [self.FILE]:
                    self.path.unlink()
                    self.run_dir.rmdir()
        with contextlib.suppress(OSError):
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cuda`` without CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available; allowed here: auto, cpu")
    return torch.device(name)


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint: its path, its state, and the replay file its manifest names
    (None when it has none or the file is gone)."""

    path: Path
    state: dict[str, Any]
    replay_path: Path | None
    replay_missing: Path | None = None
    """The replay file the manifest names when it no longer exists."""

    @property
    def env_steps(self) -> int:
        return int(self.state["loop"]["env_steps"])

    @property
    def task_names(self) -> list[str] | None:
        names = self.state.get("task_names")
        return None if names is None else list(names)


class RunDir:
    """A run directory: its config, metadata, checkpoints and the agent they hold."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ files
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metadata_path(self) -> Path:
        return self.path / "metadata.json"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def config(self, *, plugins: bool = True) -> TrainConfig:
        """The run's resolved config (ResumeError if this is not a run directory, or its
        ``config.yaml`` is not a valid config: one line naming the file). The YAML is read
        with a safe loader (no Python tags are constructed), and its numbers are checked
        (finite floats, 64-bit ints).

        With ``plugins`` (the default) the plug-ins the run recorded (``plugins:``) are
        imported, so that the names they register are known when the config is validated or
        its agent built. Importing runs their code: only modules already importable from
        sys.path and ``.py`` files at absolute paths that exist are imported (ConfigError of
        one line naming this file otherwise; see :mod:`mtrl.plugins`). ``plugins=False``
        reads a config without importing anything."""
        if not self.path.exists():
            raise ResumeError(f"run directory {self.path} does not exist")
        if not self.path.is_dir():
            raise ResumeError(f"{self.path} is a file, not a run directory")
        if not self.config_path.is_file():
            raise ResumeError(f"{self.path} is not an mtrl run directory: "
                              f"{self.config_path.name} is missing")
        bad = f"{self.config_path} is not a valid mtrl config"
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ResumeError(f"{bad}: not UTF-8 text (byte {e.start})") from None
        except OSError as e:
            raise ResumeError(f"cannot read {self.config_path}: {e.strerror or e}") from None
        try:
            cfg = C.load_yaml(text)
            C.check_numbers(cfg)
        except ConfigError as e:
            raise ResumeError(f"{bad}: {' '.join(str(e).split())}") from None
        except RecursionError:
            raise ResumeError(f"{bad}: nested too deeply") from None
        if plugins and cfg.plugins:
            from mtrl.plugins import load_plugins

            load_plugins(cfg.plugins, source=str(self.config_path))
        return cfg

    def metadata(self) -> dict[str, Any]:
        """``metadata.json`` as a dict ({} when absent); ResumeError naming the file when it
        is not a JSON object."""
        if not self.metadata_path.exists():
            return {}
        try:
            data = json.loads(self.metadata_path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ResumeError(f"{self.metadata_path} is not valid JSON: not UTF-8 text "
                              f"(byte {e.start})") from None
        except ValueError as e:  # json.JSONDecodeError
            raise ResumeError(f"{self.metadata_path} is not valid JSON: {e}") from None
        except OSError as e:
            raise ResumeError(f"cannot read {self.metadata_path}: {e.strerror or e}") from None
        except RecursionError:
            raise ResumeError(f"{self.metadata_path} is not valid JSON: nested too deeply") \
                from None
        if not isinstance(data, dict):
            raise ResumeError(f"{self.metadata_path} must hold a JSON object, got "
                              f"{type(data).__name__}")
        return data

    def checkpoints(self, keep_last: int = 3) -> CheckpointManager:
        return CheckpointManager(self.path / "checkpoints", keep_last)

    def holds_run(self) -> bool:
        """Whether a run was started here (a config or a complete checkpoint)."""
        return self.config_path.exists() or self.checkpoints().latest() is not None

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, checkpoint: str | Path | None = None) -> Path:
        """``checkpoint`` itself, or the latest complete checkpoint (ResumeError if none)."""
        if checkpoint is not None:
            return Path(checkpoint)
        if not self.path.is_dir():
            raise ResumeError(f"run directory {self.path} does not exist")
        info = self.checkpoints().latest()
        if info is None:
            raise ResumeError(f"{self.path} has no complete checkpoint")
        return info.path

    def load_checkpoint(self, checkpoint: str | Path | None = None, *,
                        adopt: bool = False) -> LoadedCheckpoint:
        """Verify and load ``checkpoint`` (default: the latest). A corrupt file raises
        CheckpointError naming it, with the next older checkpoint as a hint. ``adopt``: an
        explicitly named checkpoint whose manifest is missing is loaded as weights only,
        checked to be a complete training state, and given a manifest (a note says so)."""
        path = self.checkpoint_path(checkpoint)
        if adopt and checkpoint is not None and path.is_file() \
                and not manifest_path(path).exists():
            self._adopt(path)
        try:
            state = load_file(path)
        except CheckpointError as e:
            others = [c.path for c in self.checkpoints().list() if c.path != Path(path)]
            hint = f"; an earlier checkpoint is {others[-1]} (--checkpoint PATH)" if others else ""
            raise CheckpointError(f"{e}{hint}") from e
        replay = missing = None
        try:
            rname = read_manifest(path).get("replay_file")
        except CheckpointError:
            rname = None
        if rname:
            replay = Path(path).parent / rname
            if not replay.exists():
                missing, replay = replay, None
        return LoadedCheckpoint(Path(path), state, replay, missing)

    @staticmethod
    def _adopt(path: Path) -> None:
        state = load_file(path, verify=False)
        loop = state.get("loop")
        if not (isinstance(state.get("agent"), dict) and isinstance(loop, dict)
                and isinstance(loop.get("env_steps"), int)):
            raise CheckpointError(f"{path} has no manifest and does not hold a complete "
                                  "training state (agent and loop); not adopting it")
        adopt_file(path, kind="train_state", step=loop["env_steps"])
        print(f"note: {path} had no manifest; it loads as a complete training state at env "
              f"step {loop['env_steps']}, so it was adopted (manifest written)", file=sys.stderr)

    # ------------------------------------------------------------------ agents
    def load_agent(
        self,
        *,
        obs_space: gym.Space[Any],
        action_space: gym.Space[Any],
        task_names: list[str],
        device: str | torch.device = "auto",
        checkpoint: str | Path | None = None,
    ) -> tuple[Any, LoadedCheckpoint]:
        """The run's agent for an env with these spaces and tasks, with the weights of
        ``checkpoint`` (default: the latest), in eval mode."""
        from mtrl.agents import build_agent

        cfg = self.config()
        ckpt = self.load_checkpoint(checkpoint)
        saved = ckpt.task_names
        if saved is not None and saved != list(task_names):
            raise ResumeError(f"{ckpt.path} was trained on other tasks than "
                              f"{self.config_path}")
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        agent = build_agent(cfg.agent, obs_space=obs_space, action_space=action_space,
                            num_tasks=len(task_names), device=dev)
        try:
            agent.load_state_dict(ckpt.state["agent"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {ckpt.path} does not fit the networks that {self.config_path} "
                f"describes: {' '.join(str(e).split())[:300]}"
            ) from e
        agent.eval()
        return agent, ckpt

    # ------------------------------------------------------------------ resume
    def check_resume_compatible(self, saved: TrainConfig, requested: TrainConfig) -> None:
        """Refuse to resume this run with a config that changes its task set, networks or
        algorithm (only :data:`mtrl.config.RESUMABLE_FIELDS` may differ)."""
        bad = {
            k: v for k, v in C.diff(saved, requested).items()
            if k not in C.RESUMABLE_FIELDS and k != "preset"
        }
        if bad:
            lines = [f"  {k}: run has {a!r}, requested {b!r}" for k, (a, b) in sorted(bad.items())]
            raise ResumeError(
                f"cannot resume {self.path} with a different configuration:\n" + "\n".join(lines)
                + "\nResume with `mtrl train --resume RUN_DIR` alone (optionally --total-steps), "
                "or start a new run with --run-dir."
            )


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config of a run directory (ResumeError if it is not one)."""
    return RunDir(run_dir).config()


def check_resume_compatible(saved: TrainConfig, requested: TrainConfig,
                            run_dir: str | Path) -> None:
    """See :meth:`RunDir.check_resume_compatible`."""
    RunDir(run_dir).check_resume_compatible(saved, requested)
