"""Where the runs of ``mtrl train --seeds/--sweep`` execute: local processes (the default, in
:func:`mtrl.cli.cmd_train_seeds`) or one Ray task per run (``--launcher ray``).

A Ray task here runs the same ``python -m mtrl train ...`` command a local launch would, on
whichever node has the run's resources (``--resources-per-run cpu=4,gpu=0.25``: Ray's logical
``num_cpus`` / ``num_gpus`` of the task), writing into the run directory (a path every node must
share) and returning the process's exit status. Retries are the launcher's, not Ray's
(``max_retries=0``): a failed run is resumed from its last checkpoint with ``--resume``, which a
blind re-execution of the same command would refuse (the run directory already holds a run).
A handle has ``poll()`` like :class:`subprocess.Popen`: the exit status, or None while running;
a task whose node died reports status -1.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from mtrl.errors import ConfigError

RESOURCE_KEYS = ("cpu", "gpu")


def parse_resources(text: str | None) -> dict[str, float]:
    """``"cpu=4,gpu=0.25"`` → ``{"cpu": 4.0, "gpu": 0.25}`` (default ``{"cpu": 1.0}``)."""
    out = {"cpu": 1.0}
    if not text:
        return out
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in RESOURCE_KEYS:
            raise ConfigError(f"--resources-per-run {text!r}: give cpu=N and/or gpu=F, e.g. "
                              "cpu=4,gpu=0.25")
        try:
            amount = float(value)
        except ValueError:
            raise ConfigError(f"--resources-per-run {text!r}: {key}={value!r} is not a number"
                              ) from None
        if not (amount >= 0 and amount < 1e6) or (key == "cpu" and amount == 0):
            raise ConfigError(f"--resources-per-run {text!r}: {key}={value} must be positive")
        out[key] = amount
    return out


def _run_command(cmd: list[str], log_path: str, env: dict[str, str]) -> int:
    """Body of the Ray task: the training process, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **env})


class _RayRun:
    """A launched run: ``poll()`` → its exit status, or None while it runs."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.returncode: int | None = None

    def poll(self) -> int | None:
        import ray

        if self.returncode is None:
            done, _ = ray.wait([self.ref], timeout=0)
            if done:
                try:
                    self.returncode = int(ray.get(done[0]))
                except ray.exceptions.RayError:  # the node or worker died
                    self.returncode = -1
        return self.returncode


class RayLauncher:
    """Runs commands as Ray tasks with ``resources`` each, on the cluster at ``address``
    (None: a local Ray on this machine's CPUs; ``auto``; ``HOST:PORT``)."""

    def __init__(self, address: str | None, resources: dict[str, float]) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--launcher ray needs Ray: pip install 'mtrl[ray]'") from None
        self.resources = resources
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            kw: dict[str, Any] = {"logging_level": logging.WARNING}
            if address is None:
                from mtrl.collect.ray import LOCAL_RAY_SYSTEM_CONFIG

                kw["include_dashboard"] = False
                kw["_system_config"] = LOCAL_RAY_SYSTEM_CONFIG
            ray.init(address=address, **kw)
        self._task = ray.remote(max_retries=0)(_run_command).options(
            num_cpus=resources.get("cpu", 1.0), num_gpus=resources.get("gpu", 0.0))

    def describe(self) -> str:
        import ray

        total = ray.cluster_resources()
        per = ", ".join(f"{k}={v:g}" for k, v in self.resources.items())
        return (f"{per} each on a cluster of {total.get('CPU', 0):g} CPUs and "
                f"{total.get('GPU', 0):g} GPUs")

    def start(self, cmd: list[str], log_path: Path, env: dict[str, str]) -> _RayRun:
        return _RayRun(self._task.remote(cmd, str(log_path), env))

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
