"""``mtrl eval RUN_DIR --video``: one episode per task of the saved policy, as MP4 (or GIF).

The episode follows the evaluation protocol (deterministic policy, the task's first goal, the
episode ends at the first success or at the time limit); every ``every``-th step and the last
one are drawn. Each frame is scaled to ``size`` pixels wide and gets a label band above it: the
task name, the episode, the step and whether the episode has succeeded so far. The last frame is
held for ``hold`` seconds, so that short episodes can be seen and the outcome read. Files:
``RUN_DIR/eval/videos/<task>.mp4`` (H.264, yuv420p, even frame sizes: plays in browsers and
players; encoded by the ffmpeg binary that the ``imageio-ffmpeg`` wheel ships) or, with
``fmt="gif"``, ``<task>.gif`` (larger files, needs nothing but Pillow).

Defaults: MP4 at 480 pixels wide (Meta-World renders 480x480), GIF at 320; 30 frames per second
for Meta-World (80 Hz control; with every=2 that is 0.75x real time, a 500-step episode 9.4 s
with the hold), 10 for the other envs (a toy episode of 10 steps lasts 1.6 s). Measured: ~0.2 MB
per 500-step Meta-World task, 1.7 MB for MT10; ~11 kB per toy task.

Meta-World renders with MuJoCo off-screen, and every MuJoCo env owns an OpenGL context: several
contexts in one process corrupt each other's frames (gymnasium's renderer does not make its
context current before drawing, so a task is drawn with another task's meshes and textures: a
red arm, no table). mtrl therefore renders each task in a fresh process (multiprocessing
``spawn``) that draws only that task, so exactly one GL context exists per process. The backend
(``MUJOCO_GL``) is the user's if set, else the first of ``egl`` (GPU, or Mesa's software EGL),
``osmesa`` (``apt install libosmesa6``) and, with a display, ``glfw`` that can actually render
here (each is tried in a short subprocess). The other envs (toy, Atari) draw their frames
without OpenGL, in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.errors import ConfigError

FORMATS = ("mp4", "gif")
MUJOCO_ENVS = ("mt10", "mt25", "mt50", "metaworld")
GL_BACKENDS = ("egl", "osmesa", "glfw")  # the backends gymnasium's MuJoCo renderer knows
HOLD_SECONDS = 1.0
MP4_CRF = 23  # x264 constant quality (lower: better and larger); 23 is x264's default
MAX_FPS = 240
MIN_SIZE, MAX_SIZE = 64, 4096


class RendererUnavailable(ConfigError):
    """No MuJoCo off-screen backend can render on this machine (the message says what to
    install); a ConfigError so that the CLI reports it in one line."""


def default_fps(env_name: str) -> int:
    """Meta-World: 30 (0.75x real time at every=2); other envs: 10."""
    return 30 if env_name in MUJOCO_ENVS else 10


def default_size(fmt: str) -> int:
    """Frame width in pixels: 480 for MP4 (Meta-World's render size), 320 for GIF."""
    return 480 if fmt == "mp4" else 320


# ----------------------------------------------------------------------------------------------
# Labels


@functools.cache
def label_font(px: int) -> Any:
    """A TrueType font of ``px`` pixels: DejaVu Sans (shipped with matplotlib, or the system's),
    else Pillow's built-in TrueType font (Pillow >= 10.1). Never the tiny bitmap font, whose
    spaces vanish at video sizes."""
    from PIL import ImageFont

    candidates = []
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    candidates.append(Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    for path in candidates:
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), px)
            except OSError:  # pragma: no cover - a broken font file, or Pillow without FreeType
                continue
    return ImageFont.load_default(size=px)


def label_lines(task: str, step: int, max_steps: int, success_step: int | None
                ) -> list[list[tuple[str, tuple[int, int, int]]]]:
    """The label of a frame: lines of (text, colour) segments."""
    white, grey, green = (240, 240, 240), (170, 170, 170), (90, 230, 90)
    status = (("no success yet", grey) if success_step is None
              else (f"success at step {success_step}", green))
    return [[(task, white)], [(f"episode 1 · step {step}/{max_steps} · ", white), status]]


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def compose_frame(frame: np.ndarray, lines: list[list[tuple[str, tuple[int, int, int]]]],
                  width: int) -> np.ndarray:
    """``frame`` scaled to ``width`` (even) pixels wide, below a black band with ``lines``;
    both sides of the result are even (H.264 yuv420p needs that)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    width = _even(width)
    height = _even(width * img.height / img.width)
    if (width, height) != img.size:
        # Upscaled pixel-art (toy, Atari) stays crisp; rendered scenes are downscaled smoothly.
        method = Image.Resampling.NEAREST if width > img.width else Image.Resampling.LANCZOS
        img = img.resize((width, height), method)
    pad = max(2, width // 80)
    px = max(11, round(width / 26))
    texts = ["".join(t for t, _ in line) for line in lines]
    font = label_font(px)
    while px > 8 and max(font.getlength(t) for t in texts) > width - 2 * pad:
        px -= 1
        font = label_font(px)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + max(1, px // 6)
    band = _even(2 * pad + len(lines) * line_h)
    canvas = Image.new("RGB", (width, band + height), (0, 0, 0))
    canvas.paste(img, (0, band))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        x, y = float(pad), pad + k * line_h
        for text, colour in line:
            draw.text((x, y), text, fill=colour, font=font)
            x += font.getlength(text)
    return np.asarray(canvas)


# ----------------------------------------------------------------------------------------------
# Files


class _VideoFile:
    """Frames streamed to an MP4 (ffmpeg from imageio-ffmpeg) or collected for a GIF."""

    def __init__(self, path: Path, fmt: str, fps: int, hold: float) -> None:
        self.path, self.fmt, self.fps, self.hold = path, fmt, fps, hold
        self.frames = 0
        self.size = (0, 0)
        self._last: np.ndarray | None = None
        self._gif: list[Any] = []
        self._mp4: Any = None

    def add(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self.fmt == "mp4":
            if self._mp4 is None:
                import imageio_ffmpeg

                self.size = (frame.shape[1], frame.shape[0])
                self._mp4 = imageio_ffmpeg.write_frames(
                    str(self.path), self.size, fps=self.fps, codec="libx264",
                    pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=None,
                    macro_block_size=2, ffmpeg_log_level="error",
                    output_params=["-crf", str(MP4_CRF), "-preset", "medium",
                                   "-movflags", "+faststart"])
                self._mp4.send(None)
            self._mp4.send(frame)
        else:
            from PIL import Image

            self.size = (frame.shape[1], frame.shape[0])
            self._gif.append(Image.fromarray(frame))
        self._last = frame
        self.frames += 1

    def finish(self) -> dict[str, Any]:
        held = round(self.hold * self.fps)
        if self.fmt == "mp4":
            for _ in range(held):
                self._mp4.send(self._last)
            self._mp4.close()
            seconds = (self.frames + held) / self.fps
        else:
            step = round(1000 / self.fps)
            durations = [step] * len(self._gif)
            durations[-1] += round(1000 * self.hold)
            self._gif[0].save(self.path, save_all=True, append_images=self._gif[1:],
                              duration=durations, loop=0)
            self._gif = []
            seconds = sum(durations) / 1000
        return {"seconds": seconds, "bytes": self.path.stat().st_size,
                "width": self.size[0], "height": self.size[1]}

    def abort(self) -> None:
        if self._mp4 is not None:
            with contextlib.suppress(Exception):  # already failing: keep the first error
                self._mp4.close()
        self.path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# MuJoCo's OpenGL backend

_PROBE = """
import importlib, os, numpy as np, mujoco
b = os.environ["MUJOCO_GL"]
ctx = importlib.import_module("mujoco." + b).GLContext(64, 64)
ctx.make_current()
m = mujoco.MjModel.from_xml_string(
    "<mujoco><worldbody><light pos='0 0 3'/><geom size='0.2'/></worldbody></mujoco>")
d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
con = mujoco.MjrContext(m, mujoco.mjtFontScale.mjFONTSCALE_150)
scn = mujoco.MjvScene(m, 100)
mujoco.mjv_updateScene(m, d, mujoco.MjvOption(), None, mujoco.MjvCamera(),
                       mujoco.mjtCatBit.mjCAT_ALL, scn)
vp = mujoco.MjrRect(0, 0, 64, 64)
mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, con)
mujoco.mjr_render(vp, scn, con)
rgb = np.zeros(64 * 64 * 3, dtype=np.uint8)
mujoco.mjr_readPixels(rgb, None, vp, con)
con.free()
ctx.free()
print("rendered", int(rgb.max()))
os._exit(0)
"""


@functools.cache
def probe_mujoco_gl(backend: str) -> str | None:
    """None if MuJoCo renders with ``MUJOCO_GL=backend`` here (tried in a subprocess), else
    why not, in a few words."""
    import ctypes.util
    import subprocess
    import sys

    lib = {"egl": "EGL", "osmesa": "OSMesa"}.get(backend)
    if lib and not ctypes.util.find_library(lib):
        return f"lib{lib} is not installed"
    if backend == "glfw" and not os.environ.get("DISPLAY"):
        return "no display (DISPLAY is not set)"
    env = {**os.environ, "MUJOCO_GL": backend}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "rendering a test scene timed out"
    if proc.returncode == 0 and "rendered" in proc.stdout:
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else f"the test render exited with {proc.returncode}"


def select_mujoco_gl() -> str:
    """The MuJoCo off-screen backend to render with: ``MUJOCO_GL`` if the user set it, else the
    first of egl, osmesa (and glfw with a display) that renders a test scene here. Raises
    :class:`RendererUnavailable`, saying what to install, when none does. The environment of
    this process is left as it is (the renderer processes get the choice)."""
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    if user:
        if user not in GL_BACKENDS:
            raise RendererUnavailable(f"MUJOCO_GL={user!r} is not a backend gymnasium's MuJoCo "
                                      f"renderer knows; allowed: {', '.join(GL_BACKENDS)}")
        why = probe_mujoco_gl(user)
        if why:
            raise RendererUnavailable(f"MUJOCO_GL={user} (set in the environment) cannot render "
                                      f"here: {why}; unset it to let mtrl choose")
        return user
    tried = []
    for backend in GL_BACKENDS:
        why = probe_mujoco_gl(backend)
        if why is None:
            return backend
        tried.append(f"{backend}: {why}")
    raise RendererUnavailable(
        "Meta-World videos need MuJoCo off-screen rendering, and no backend works here ("
        + "; ".join(tried) + "). Install EGL (a GPU driver, or Mesa: apt install libegl1 "
        "libegl-mesa0) or OSMesa (apt install libosmesa6), or set MUJOCO_GL")


# ----------------------------------------------------------------------------------------------
# Recording


@dataclasses.dataclass(frozen=True)
class _Job:
    run_dir: str
    checkpoint: str | None
    device: str
    every: int
    fps: int
    size: int
    fmt: str
    out_dir: str
    tasks: tuple[str, ...]  # the tasks to draw (the others are stepped, not drawn)
    max_steps: int | None
    hold: float
    mujoco_gl: str | None  # set: draw with this MuJoCo backend, one sub-env at a time
    renderer: str


def record_videos(
    run_dir: str,
    *,
    checkpoint: str | None = None,
    every: int = 2,
    fps: int | None = None,
    size: int | None = None,
    fmt: str = "mp4",
    tasks: list[str] | None = None,
    max_steps: int | None = None,
    hold: float = HOLD_SECONDS,
    jobs: int = 1,
    device: str = "auto",
    out_dir: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Record one episode per task (or per task of ``tasks``) to ``<out_dir>/<task>.<fmt>``.

    ``fps``/``size`` default to :func:`default_fps`/:func:`default_size`; ``max_steps`` ends
    the videos early (a preview); ``jobs``: Meta-World renderer processes at a time. Returns
    ``{task: {"path", "frames" (drawn), "steps", "success", "seconds", "bytes", "width",
    "height", "renderer"}}``."""
    if fmt not in FORMATS:
        raise ConfigError(f"video format {fmt!r} is not valid; allowed: {', '.join(FORMATS)}")
    if every < 1:
        raise ConfigError(f"every={every} must be >= 1")
    if fps is not None and not 1 <= fps <= MAX_FPS:
        raise ConfigError(f"fps={fps} must be in [1, {MAX_FPS}]")
    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"size={size} must be in [{MIN_SIZE}, {MAX_SIZE}]")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps={max_steps} must be >= 1")
    if not 1 <= jobs <= 256:
        raise ConfigError(f"jobs={jobs} must be in [1, 256]")
    if not 0 <= hold <= 60:
        raise ConfigError(f"hold={hold} must be in [0, 60] seconds")
    from mtrl.rundir import RunDir

    # The backend first: importing Meta-World imports MuJoCo, which refuses a bad MUJOCO_GL.
    mujoco = RunDir(run_dir).config().env.name in MUJOCO_ENVS
    backend = select_mujoco_gl() if mujoco else None
    cfg, names = select_tasks(run_dir, tasks)
    videos = Path(out_dir) if out_dir else Path(run_dir) / "eval" / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    job = _Job(run_dir=str(run_dir), checkpoint=checkpoint, device=device, every=every,
               fps=fps or default_fps(cfg.env.name), size=size or default_size(fmt), fmt=fmt,
               out_dir=str(videos), tasks=tuple(names), max_steps=max_steps, hold=float(hold),
               mujoco_gl=backend,
               renderer=(f"MuJoCo {backend} (MUJOCO_GL), one process per task" if mujoco
                         else "in-process, no OpenGL"))
    if not mujoco:
        return _record(job)
    # One task per fresh process: exactly one GL context in each.
    per_task = [dataclasses.replace(job, tasks=(name,)) for name in names]
    if jobs == 1:
        results = [_record_isolated(j) for j in per_task]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_record_isolated, per_task))
    return {name: video for result in results for name, video in result.items()}


def select_tasks(run_dir: str, tasks: list[str] | None) -> tuple[Any, list[str]]:
    """The run's config and the tasks to record (``tasks``, in task order; all if None).
    Raises ConfigError naming the unknown tasks and the run's tasks."""
    from mtrl import config as C
    from mtrl.rundir import RunDir

    cfg = RunDir(run_dir).config()
    C.validate(cfg, memory=False)  # no training buffers
    names = C.task_names(cfg.env)
    if tasks:
        bad = [t for t in tasks if t not in names]
        if bad:
            raise ConfigError(f"video task(s) {', '.join(bad)} are not tasks of this run; its "
                              "tasks: " + ", ".join(names))
        names = [t for t in names if t in tasks]
    return cfg, names


def _record_isolated(job: _Job) -> dict[str, dict[str, Any]]:
    """``_record(job)`` in a fresh Python process (``python -m mtrl.video``): a plain
    subprocess, not multiprocessing, so that it works from any caller's script. Errors come
    back as the same exception type when it can be rebuilt from its message."""
    import importlib
    import json
    import subprocess
    import sys
    import tempfile

    import mtrl

    env = {**os.environ, "MUJOCO_GL": str(job.mujoco_gl)}
    root = str(Path(mtrl.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="mtrl-video-") as tmp:
        result = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-m", "mtrl.video", str(result)],
                              input=json.dumps(dataclasses.asdict(job)), env=env, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        data = json.loads(result.read_text()) if result.is_file() else None
    if data is not None and "error" in data:
        err = data["error"]
        try:
            cls = getattr(importlib.import_module(err["module"]), err["type"])
            exc = cls(err["message"]) if issubclass(cls, Exception) else None
        except Exception:  # fall back to a RuntimeError with the same text
            exc = None
        raise exc or RuntimeError(f"{err['type']}: {err['message']}")
    if proc.returncode != 0 or data is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the renderer process of {', '.join(job.tasks)} failed with exit "
                           f"code {proc.returncode} (MUJOCO_GL={job.mujoco_gl}; another backend "
                           f"may work: MUJOCO_GL=egl|osmesa):\n{tail}")
    return dict(data["videos"])


def _child_main(result_path: str) -> None:
    """The renderer process: a job (JSON) on stdin, its result or error (JSON) to a file."""
    import json
    import sys
    import warnings

    warnings.filterwarnings("ignore", module=r"gymnasium\..*")
    fields = json.loads(sys.stdin.read())
    job = _Job(**{**fields, "tasks": tuple(fields["tasks"])})
    try:
        out: dict[str, Any] = {"videos": _record(job)}
    except Exception as e:  # reported to the parent, which raises it
        out = {"error": {"module": type(e).__module__, "type": type(e).__qualname__,
                         "message": str(e)}}
    Path(result_path).write_text(json.dumps(out))


def _draw(env: Any, idx: np.ndarray, one_by_one: bool) -> list[np.ndarray]:
    """Frames of the sub-envs ``idx``. MuJoCo (``one_by_one``): only those sub-envs render,
    so that only their GL contexts are ever created."""
    if one_by_one:
        subs = env.env.envs  # evaluation envs are sync vector envs
        return [np.asarray(subs[i].render(), dtype=np.uint8) for i in idx]
    shots = env.render_frames()
    return [np.asarray(shots[i], dtype=np.uint8) for i in idx]


def _record(job: _Job) -> dict[str, dict[str, Any]]:
    """Run the protocol episode of every task in lockstep, drawing ``job.tasks``; stops when
    those are done. Runs in this process, or in a renderer process (MuJoCo)."""
    if job.mujoco_gl:
        os.environ["MUJOCO_GL"] = job.mujoco_gl  # before MuJoCo is imported
    from mtrl import config as C
    from mtrl.envs import make_env
    from mtrl.evaluation import load_policy
    from mtrl.rundir import RunDir
    from mtrl.seeding import derive_seed, seed_everything

    cfg = RunDir(job.run_dir).config()
    C.validate(cfg, memory=False)
    seed_everything(cfg.seed)
    env = make_env(cfg.env, seed=cfg.seed, evaluation=True, render=True)
    files: dict[int, _VideoFile] = {}
    try:
        agent, _, _ = load_policy(job.run_dir, job.checkpoint, job.device, env)
        n = env.num_envs
        names = [env.task_names[k] for k in env.task_ids]
        want = np.array([name in job.tasks for name in names], dtype=bool)
        for i in map(int, np.flatnonzero(want)):
            files[i] = _VideoFile(Path(job.out_dir) / f"{names[i]}.{job.fmt}", job.fmt,
                                       job.fps, job.hold)
        ever = np.zeros(n, dtype=bool)
        first = np.zeros(n, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        env.set_goals(np.zeros(n, dtype=np.int64), active)
        obs, _ = env.reset(seed=derive_seed(cfg.seed, "eval"))

        def grab(mask: np.ndarray) -> None:
            idx = np.flatnonzero(mask & want)
            if len(idx) == 0:
                return
            for i, shot in zip(idx, _draw(env, idx, job.mujoco_gl is not None), strict=True):
                lines = label_lines(names[i], int(steps[i]), env.max_episode_steps,
                                    int(first[i]) if ever[i] else None)
                files[int(i)].add(compose_frame(shot, lines, job.size))

        grab(active)
        while (active & want).any():
            action = agent.act(obs, env.task_ids, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            ended = np.asarray(terminated | truncated, dtype=bool)
            done = ended & active
            steps[active] += 1
            success = np.asarray(info["success"], dtype=bool) & active
            first = np.where(success & ~ever, steps, first)
            ever |= success
            if job.max_steps is not None:
                done |= active & (steps >= job.max_steps)
            due = active & ((steps % job.every == 0) | done)
            if due.any():
                # A finished Meta-World env still shows its last state until reset.
                grab(due)
            active &= ~done
            if (ended | done).any() and (active & want).any():
                # Ended envs restart so that the vector env can step on; their new episodes
                # (which may end again) are ignored.
                obs, _ = env.reset(options={"reset_mask": ended | done})
        out: dict[str, dict[str, Any]] = {}
        for i in sorted(files):
            video = files[i]
            meta = video.finish()
            del files[i]
            out[names[i]] = {"path": str(video.path), "frames": video.frames,
                             "steps": int(steps[i]), "success": bool(ever[i]), **meta,
                             "renderer": job.renderer}
        return out
    finally:
        for f in files.values():
            f.abort()
        env.close()


if __name__ == "__main__":
    import sys

    _child_main(sys.argv[1])
