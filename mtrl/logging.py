"""TensorBoard logging with mtrl's tag names, and the run's ``metadata.json``.

Tags (see DESIGN.md): ``train/episode_return/<task>``, ``train/success/<task>``,
``eval/success/<task>``, ``eval/success_mean``, ``eval/return/<task>``, ``loss/<name>``,
``alpha/<task>``, ``perf/env_steps_per_sec``, ``perf/updates_per_sec``. Tasks are named by the
benchmark's own names, never by index.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.checkpoint import atomic_write_text


class TextLog:
    """Plain-text progress lines, appended to ``<run>/train.log`` (``tail -f`` follows a run,
    ``--seeds`` runs included) and echoed to stdout when ``echo`` is set (no progress bar)."""

    def __init__(self, run_dir: Path, echo: bool) -> None:
        self.path = Path(run_dir) / "train.log"
        self.echo = echo

    def line(self, text: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {text}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(stamped + "\n")
        except OSError:
            pass  # progress text is a convenience; a full disk is reported by checkpoints
        if self.echo:
            print(stamped, flush=True)


def format_duration(seconds: float) -> str:
    """``3d 4h``, ``2h 05m``, ``4m 10s``, ``12s``."""
    s = max(0, round(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


class RunLogger:
    """Writes scalars to TensorBoard event files in the run directory."""

    def __init__(
        self, run_dir: Path, task_names: Sequence[str], purge_step: int | None = None
    ) -> None:
        """``purge_step``: on resume, the step of the checkpoint; TensorBoard then drops the
        events an interrupted process wrote after it, so curves do not double back."""
        from torch.utils.tensorboard import SummaryWriter

        self.task_names = list(task_names)
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, float(value), step)

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        for name, v in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", float(v), step)

    def per_task(self, prefix: str, values: Sequence[float] | np.ndarray, step: int,
                 tasks: Sequence[int] | None = None) -> None:
        """``prefix/<task name>`` for each task index in ``tasks`` (default: all)."""
        idx = range(len(self.task_names)) if tasks is None else tasks
        for k in idx:
            self.writer.add_scalar(f"{prefix}/{self.task_names[k]}", float(values[k]), step)

    def matrix_image(self, tag: str, matrix: np.ndarray, step: int) -> None:
        """A ``[T, T]`` matrix of values in [-1, 1] (e.g. gradient cosines, rows and columns in
        task-id order) as a heat-map image: blue −1, white 0, red +1."""
        self.writer.add_image(tag, heatmap_rgb(matrix), step, dataformats="HWC")

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)

    def hparams(self, flat_config: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        """Register the run's hyperparameters with TensorBoard's HParams dashboard, linked to
        ``metric_tags`` (written as ordinary scalars during training)."""
        from torch.utils.tensorboard.summary import hparams

        clean = {
            k: (v if isinstance(v, int | float | str | bool) else str(v))
            for k, v in flat_config.items()
        }
        exp, ssi, sei = hparams(clean, {t: 0.0 for t in metric_tags})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def heatmap_rgb(matrix: np.ndarray, min_size: int = 256) -> np.ndarray:
    """``uint8 [H, W, 3]`` diverging heat map of a matrix with values in [-1, 1], each cell
    enlarged to a square of at least 4 pixels (at least ``min_size`` pixels in all)."""
    m = np.clip(np.nan_to_num(np.asarray(matrix, dtype=np.float64)), -1.0, 1.0)
    pos, neg = np.clip(m, 0, 1), np.clip(-m, 0, 1)
    # White at 0, fading to red (1, 0, 0) for +1 and to blue (0, 0, 1) for −1.
    rgb = np.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos], axis=-1)
    cell = max(4, -(-min_size // max(m.shape)))
    img = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def tile_matrices(mats: np.ndarray, gap: int = 1) -> np.ndarray:
    """``[T, r, c]`` matrices laid out in a near-square grid (task-id order, row-major), with
    ``gap`` zero rows/columns between them: one image for all tasks' routing matrices."""
    t, r, c = mats.shape
    cols = int(np.ceil(np.sqrt(t)))
    rows = int(np.ceil(t / cols))
    out = np.zeros((rows * (r + gap) - gap, cols * (c + gap) - gap))
    for k in range(t):
        i, j = divmod(k, cols)
        out[i * (r + gap): i * (r + gap) + r, j * (c + gap): j * (c + gap) + c] = mats[k]
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """The git commit (and whether the tree is dirty) of the mtrl source, if it is a checkout."""
    where = Path(path or Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {"commit": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def collect_metadata(seed: int, device: str, benchmark: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    import mtrl

    dev: dict[str, Any] = {"type": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        dev["name"] = torch.cuda.get_device_name()
    return {
        "mtrl": mtrl.__version__,
        "git": git_commit(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "gymnasium": _version("gymnasium"),
            "metaworld": _version("metaworld"),
            "mujoco": _version("mujoco"),
            "ale-py": _version("ale-py"),
        },
        "seed": seed,
        "device": dev,
        "benchmark": dict(benchmark),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
