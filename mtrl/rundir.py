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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from mtrl import config as C
from mtrl.checkpoint import CheckpointError, CheckpointManager, load_file, read_manifest
from mtrl.config import ConfigError, TrainConfig


class ResumeError(RuntimeError):
    """A run directory cannot be resumed, evaluated or loaded as asked (the message says why)."""


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

    def config(self) -> TrainConfig:
        """The run's resolved config (ResumeError if this is not a run directory)."""
        if not self.path.is_dir():
            raise ResumeError(f"run directory {self.path} does not exist")
        if not self.config_path.exists():
            raise ResumeError(f"{self.path} is not an mtrl run directory: "
                              f"{self.config_path.name} is missing")
        try:
            return C.load_yaml(self.config_path.read_text())
        except ConfigError as e:
            raise ResumeError(f"{self.config_path} is not a valid mtrl config: {e}") from e

    def metadata(self) -> dict[str, Any]:
        """``metadata.json`` as a dict ({} when absent)."""
        if not self.metadata_path.exists():
            return {}
        return json.loads(self.metadata_path.read_text())

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

    def load_checkpoint(self, checkpoint: str | Path | None = None) -> LoadedCheckpoint:
        """Verify and load ``checkpoint`` (default: the latest). A corrupt file raises
        CheckpointError naming it, with the next older checkpoint as a hint."""
        path = self.checkpoint_path(checkpoint)
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
