"""TensorBoard (and, with ``log.wandb``, Weights & Biases) logging with mtrl's tag names, and
the run's ``metadata.json``.

Tags (see DESIGN.md): ``train/episode_return/<task>``, ``train/success/<task>``,
``eval/success/<task>``, ``eval/success_mean``, ``eval/return/<task>``, ``loss/<name>``,
``alpha/<task>``, ``perf/env_steps_per_sec``, ``perf/updates_per_sec``. Tasks are named by the
benchmark's own names, never by index.
"""

from __future__ import annotations

import html
import json
import platform
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.checkpoint import atomic_write_text
from mtrl.errors import ConfigError


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


WANDB_RUN_ID_FILE = "wandb_run_id"
"""Holds the W&B run id in the run directory, so that a resumed mtrl run resumes its W&B run."""


class WandbSink:
    """Mirrors :class:`RunLogger`'s values to a Weights & Biases run (``log.wandb``).

    Values are sent with an ``env_step`` key, and W&B charts every tag against it
    (``define_metric("*", step_metric="env_step")``); W&B's own ``_step`` only counts rows, so
    values logged out of order (an episode end at an earlier env step than the last loss) are
    kept instead of being dropped as a step that goes back. Consecutive values of one env step
    form one row, sent when a value of another step (or a tag already in the row) arrives, and
    on :meth:`flush` / :meth:`close`."""

    def __init__(self, run_dir: Path, project: str, mode: str,
                 config: Mapping[str, Any] | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("log.wandb needs the wandb package: pip install 'mtrl[wandb]'") \
                from None
        self._wandb = wandb
        run_dir = Path(run_dir).resolve()
        id_path = run_dir / WANDB_RUN_ID_FILE
        run_id = id_path.read_text(encoding="utf-8").strip() if id_path.is_file() else ""
        if not run_id:
            run_id = _new_wandb_id()
            atomic_write_text(id_path, run_id + "\n")
        wandb_mode: Any = mode  # one of mtrl.config.WANDB_MODES
        self.run = wandb.init(project=project, mode=wandb_mode, dir=str(run_dir),
                              name=run_dir.name, id=run_id, resume="allow")
        if config:
            # allow_val_change: a resume may change total_steps, eval.every, ... (see
            # mtrl.config.RESUMABLE_FIELDS).
            self.run.config.update(dict(config), allow_val_change=True)
        self.run.define_metric("env_step")
        self.run.define_metric("*", step_metric="env_step")
        self._row: dict[str, Any] = {}
        self._step = 0

    def add(self, tag: str, value: Any, step: int) -> None:
        if self._row and (step != self._step or tag in self._row):
            self.commit()
        self._step = int(step)
        self._row[tag] = value

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.add(tag, float(value), step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        self.add(tag, self._wandb.Image(rgb), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.add(tag, self._wandb.Html(f"<pre>{html.escape(text)}</pre>"), step)

    def commit(self) -> None:
        if self._row:
            self.run.log({"env_step": self._step, **self._row})
            self._row = {}

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.run.finish()


def _new_wandb_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


class RunLogger:
    """Writes scalars to TensorBoard event files in the run directory, and, with a W&B project
    (``log.wandb``), the same values under the same tags to W&B (:class:`WandbSink`)."""

    def __init__(
        self, run_dir: Path, task_names: Sequence[str], purge_step: int | None = None, *,
        wandb_project: str = "", wandb_mode: str = "online",
        wandb_config: Mapping[str, Any] | None = None,
    ) -> None:
        """``purge_step``: on resume, the step of the checkpoint; TensorBoard then drops the
        events an interrupted process wrote after it, so curves do not double back (W&B keeps
        them: its rows cannot be removed). ``wandb_project``: empty, or ``wandb_mode``
        "disabled", leaves W&B out (never imported); ``wandb_config``: the flattened run config
        recorded as the W&B run's config."""
        from torch.utils.tensorboard import SummaryWriter

        self.task_names = list(task_names)
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self.wandb: WandbSink | None = None
        if wandb_project and wandb_mode != "disabled":
            try:
                self.wandb = WandbSink(Path(run_dir), wandb_project, wandb_mode, wandb_config)
            except BaseException:
                self.writer.close()
                raise

    def _scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)
        if self.wandb is not None:
            self.wandb.scalar(tag, value, step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._scalar(tag, float(value), step)

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        for name, v in values.items():
            self._scalar(f"{prefix}/{name}", float(v), step)

    def per_task(self, prefix: str, values: Sequence[float] | np.ndarray, step: int,
                 tasks: Sequence[int] | None = None) -> None:
        """``prefix/<task name>`` for each task index in ``tasks`` (default: all)."""
        idx = range(len(self.task_names)) if tasks is None else tasks
        for k in idx:
            self._scalar(f"{prefix}/{self.task_names[k]}", float(values[k]), step)

    def matrix_image(self, tag: str, matrix: np.ndarray, step: int,
                     labels: Sequence[str] | None = None) -> None:
        """A ``[T, T]`` matrix of values in [-1, 1] (e.g. gradient cosines, rows and columns in
        task-id order) as a heat-map image: blue −1, white 0, red +1. With ``labels`` (one per
        row) the image names the rows, numbers the columns and has a colour bar
        (:func:`labeled_heatmap_rgb`)."""
        rgb = heatmap_rgb(matrix) if labels is None else labeled_heatmap_rgb(matrix, labels)
        self.writer.add_image(tag, rgb, step, dataformats="HWC")
        if self.wandb is not None:
            self.wandb.image(tag, rgb, step)

    def text(self, tag: str, text: str) -> None:
        """Text at step 0 (TensorBoard's default); on W&B an HTML ``<pre>`` block."""
        self.writer.add_text(tag, text)
        if self.wandb is not None:
            self.wandb.text(tag, text, 0)

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
        if self.wandb is not None:
            self.wandb.commit()

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            if self.wandb is not None:
                self.wandb.close()
                self.wandb = None


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


def labeled_heatmap_rgb(matrix: np.ndarray, labels: Sequence[str], cell: int | None = None
                        ) -> np.ndarray:
    """:func:`heatmap_rgb` of a square ``[T, T]`` matrix with its rows named ``k  label_k``
    on the left, its columns numbered ``k`` on top, and a colour bar (+1 red at the top, 0
    white, −1 blue at the bottom) on the right: ``uint8 [H, W, 3]`` on a white background."""
    from PIL import Image, ImageDraw

    from mtrl.video import label_font

    m = np.asarray(matrix, dtype=np.float64)
    t = m.shape[0]
    if m.shape != (t, t) or len(labels) != t:
        raise ValueError(f"need a square matrix and one label per row, got {m.shape} and "
                         f"{len(labels)} labels")
    cell = cell or max(11, min(40, 400 // max(t, 1)))
    px = max(9, min(14, cell - 2))
    font = label_font(px)
    names = [f"{k}  {name}" for k, name in enumerate(labels)]
    pad = 6
    left = int(max(font.getlength(n) for n in names)) + 2 * pad
    top = px + 2 * pad
    bar_w, gap = max(10, cell // 2), 3 * pad
    side = t * cell
    width = left + side + gap + bar_w + int(font.getlength("-1.0")) + 2 * pad
    height = top + side + pad
    img = Image.new("RGB", (width, height), (255, 255, 255))
    img.paste(Image.fromarray(heatmap_rgb(m, min_size=side)[:side, :side]), (left, top))
    draw = ImageDraw.Draw(img)
    black = (0, 0, 0)
    ascent = font.getmetrics()[0]
    for k, name in enumerate(names):
        y = top + k * cell + (cell - ascent) // 2
        draw.text((pad, y), name, fill=black, font=font)
        col = str(k)
        x = left + k * cell + (cell - int(font.getlength(col))) // 2
        draw.text((x, pad), col, fill=black, font=font)
    ramp = np.linspace(1.0, -1.0, side)[:, None].repeat(bar_w, axis=1)
    bar = heatmap_rgb(ramp, min_size=1)[::4, ::4][:side, :bar_w]
    x0 = left + side + gap
    img.paste(Image.fromarray(bar), (x0, top))
    for value, y in ((1.0, top), (0.0, top + side // 2 - ascent // 2),
                     (-1.0, top + side - ascent)):
        draw.text((x0 + bar_w + pad // 2, y), f"{value:+.0f}" if value else "0", fill=black,
                  font=font)
    return np.asarray(img, dtype=np.uint8)


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
