"""``mtrl eval RUN_DIR --video``: one episode per task of the saved policy, as animated GIFs.

The episode follows the evaluation protocol (deterministic policy, the task's first goal, the
episode ends at the first success or at the time limit); every ``every``-th step and the last
one are drawn, each frame labelled with the task name, the step and whether the episode has
succeeded so far; frames larger than ``size`` pixels are scaled down. Files:
``RUN_DIR/eval/videos/<task>.gif`` (GIF: plays in any browser and needs no codec beyond Pillow).

Meta-World renders with MuJoCo off-screen. On a machine without a display mtrl selects OSMesa
(``MUJOCO_GL=osmesa``, Debian/Ubuntu package ``libosmesa6``; a few frames per second on a CPU)
unless ``MUJOCO_GL`` is already set (``egl`` is faster on a GPU machine).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _label(frame: np.ndarray, text: str, ok: bool, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    if max(img.size) > size:  # keep GIFs small: MuJoCo renders 480x480
        img = img.resize((size, round(size * img.height / img.width)), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    h = max(14, img.height // 16)
    draw.rectangle((0, 0, img.width, h), fill=(0, 0, 0))
    draw.text((4, max(0, (h - 11) // 2)), text, fill=(90, 230, 90) if ok else (240, 240, 240))
    return np.asarray(img)


def select_mujoco_gl() -> str | None:
    """Choose MuJoCo's off-screen backend before MuJoCo is imported: keep ``MUJOCO_GL`` if the
    user set it, use the display if there is one, else OSMesa if its library is installed.
    Raises a RuntimeError that says what to install when a headless machine has neither."""
    import ctypes.util

    if os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY"):
        return os.environ.get("MUJOCO_GL")
    if ctypes.util.find_library("OSMesa"):
        os.environ["MUJOCO_GL"] = "osmesa"
        return "osmesa"
    if ctypes.util.find_library("EGL"):
        os.environ["MUJOCO_GL"] = "egl"
        return "egl"
    raise RuntimeError(
        "Meta-World videos need MuJoCo off-screen rendering, and this machine has no display, "
        "no OSMesa and no EGL: install OSMesa (Debian/Ubuntu: apt install libosmesa6) or, on a "
        "GPU machine, run with MUJOCO_GL=egl"
    )


def record_videos(
    run_dir: str,
    *,
    checkpoint: str | None = None,
    every: int = 2,
    fps: int = 20,
    size: int = 320,
    device: str = "auto",
    out_dir: str | None = None,
) -> dict[str, dict[str, object]]:
    """Record one episode per task; returns ``{task: {"path", "frames", "steps", "success"}}``."""
    if every < 1:
        raise ValueError(f"every={every} must be >= 1")
    from mtrl.rundir import RunDir

    cfg = RunDir(run_dir).config()
    if cfg.env.name in ("mt10", "mt25", "mt50", "metaworld"):
        select_mujoco_gl()
    from PIL import Image

    from mtrl import config as C
    from mtrl.envs import make_env
    from mtrl.evaluation import load_policy
    from mtrl.seeding import derive_seed, seed_everything

    C.validate(cfg, memory=False)  # no training buffers
    seed_everything(cfg.seed)
    env = make_env(cfg.env, seed=cfg.seed, evaluation=True, render=True)
    videos = Path(out_dir) if out_dir else Path(run_dir) / "eval" / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    try:
        agent, _, _ = load_policy(run_dir, checkpoint, device, env)
        n = env.num_envs
        names = [env.task_names[k] for k in env.task_ids]
        frames: list[list[np.ndarray]] = [[] for _ in range(n)]
        ever = np.zeros(n, dtype=bool)
        steps = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        env.set_goals(np.zeros(n, dtype=np.int64), active)
        obs, _ = env.reset(seed=derive_seed(cfg.seed, "eval"))

        def grab(mask: np.ndarray) -> None:
            shots = env.render_frames()
            for i in np.flatnonzero(mask):
                status = "success" if ever[i] else "no success yet"
                frames[i].append(_label(np.asarray(shots[i], dtype=np.uint8),
                                        f"{names[i]}  step {steps[i]}  {status}", bool(ever[i]),
                                        size))

        grab(active)
        while active.any():
            action = agent.act(obs, env.task_ids, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = (terminated | truncated) & active
            steps[active] += 1
            ever |= np.asarray(info["success"], dtype=bool) & active
            due = active & ((steps % every == 0) | done)
            if due.any():
                # A finished Meta-World env still shows its last state until reset.
                grab(due)
            active &= ~done
            if done.any():  # finished envs restart (ignored) so the vector env can step on
                obs, _ = env.reset(options={"reset_mask": done})
        out: dict[str, dict[str, object]] = {}
        for i, name in enumerate(names):
            path = videos / f"{name}.gif"
            pil = [Image.fromarray(f) for f in frames[i]]
            pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 / fps),
                        loop=0)
            out[name] = {"path": str(path), "frames": len(pil), "steps": int(steps[i]),
                         "success": bool(ever[i])}
        return out
    finally:
        env.close()
