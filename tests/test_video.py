"""Videos of ``mtrl eval --video``: MP4 by default, GIF on request, legible labels, episodes
long enough to watch, and Meta-World frames that do not depend on which tasks were rendered
before (each task renders in its own process)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_toy_config

from mtrl import config as C
from mtrl import video as V
from mtrl.cli import main
from mtrl.presets import get_preset
from mtrl.runner import train


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("video") / "toy"
    train(tiny_toy_config(seed=0), run)
    return str(run)


def _decode_mp4(path: Path) -> tuple[list[np.ndarray], dict]:
    import imageio.v2 as imageio

    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        meta = reader.get_meta_data()
        frames = [np.asarray(f) for f in reader]
    return frames, meta


def _drawn(steps: int, every: int) -> int:
    return len(range(0, steps + 1, every)) + (1 if steps % every else 0)  # every k-th + last


def test_mp4_by_default_decodes_to_the_expected_frames_and_size(toy_run, capsys):
    assert main(["eval", toy_run, "--video", "--no-table", "--video-every", "3"]) == 0
    out = capsys.readouterr().out
    assert "videos rendered with in-process, no OpenGL" in out
    videos = Path(toy_run) / "eval" / "videos"
    assert sorted(p.name for p in videos.glob("*.mp4")) == [f"goal-{k}.mp4" for k in range(4)]
    for k in range(4):
        path = videos / f"goal-{k}.mp4"
        m = re.search(rf"video {re.escape(str(path))}: (\d+) frames, (\d+) steps", out)
        assert m, out
        drawn, steps = int(m.group(1)), int(m.group(2))
        assert drawn == _drawn(steps, 3) and 1 <= steps <= 50
        frames, meta = _decode_mp4(path)
        fps = V.default_fps("toy-reach")
        assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
        assert meta["fps"] == fps == 10
        # the drawn frames, then the last one held for a second
        assert len(frames) == drawn + round(V.HOLD_SECONDS * fps)
        width, height = meta["size"]
        assert width == V.default_size("mp4") == 480 and height % 2 == 0
        assert height == 480 + _band(frames[0])  # the label band sits above the 480x480 scene
        assert all(f.shape == (height, width, 3) for f in frames)
        assert len(frames) / fps >= 1.0  # watchable: at least a second
    assert re.search(r"videos: 4 files, \d+\.\d\d MB in all", out)


def _band(frame: np.ndarray) -> int:
    """Rows of the black label band at the top of a toy frame (the scene is white)."""
    bright = frame.mean(axis=(1, 2)) > 200
    return int(np.argmax(bright))


def test_a_short_toy_episode_still_lasts_a_second(toy_run, tmp_path):
    info = V.record_videos(toy_run, every=2, max_steps=2, out_dir=str(tmp_path))
    for task, v in info.items():
        assert v["steps"] == 2 and v["frames"] == 2  # steps 0 and 2
        frames, meta = _decode_mp4(Path(v["path"]))
        assert len(frames) == 2 + 10
        assert len(frames) / meta["fps"] >= 1.0 and v["seconds"] >= 1.0, task


def test_gif_on_request(toy_run, tmp_path, capsys):
    from PIL import Image

    assert main(["eval", toy_run, "--video", "--no-table", "--video-format", "gif",
                 "--video-size", "240", "--video-fps", "20", "--video-tasks", "goal-2"]) == 0
    out = capsys.readouterr().out
    path = Path(toy_run) / "eval" / "videos" / "goal-2.gif"
    m = re.search(rf"video {re.escape(str(path))}: (\d+) frames, (\d+) steps", out)
    assert m and "goal-0.gif" not in out, out
    with Image.open(path) as im:
        assert im.n_frames == int(m.group(1)) and im.size[0] == 240 and im.size[1] % 2 == 0
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert durations[:-1] == [50] * (len(durations) - 1)  # 20 fps
    assert durations[-1] == 50 + 1000 and sum(durations) >= 1000  # the last frame is held


def test_label_keeps_spaces_in_a_truetype_font(monkeypatch):
    from PIL import ImageDraw, ImageFont

    calls = []
    real = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        calls.append((text, kwargs.get("font")))
        return real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    scene = np.full((160, 160, 3), 255, dtype=np.uint8)
    out = V.compose_frame(scene, V.label_lines("goal-1", 7, 50, None), 480)
    assert out.shape[1] == 480 and out.shape[0] % 2 == 0
    texts = [t for t, _ in calls]
    assert texts == ["goal-1", "episode 1 · step 7/50 · ", "no success yet"]
    for _, font in calls:
        # not the 6-pixel bitmap font, and a space a word gap wide (Aileron's is 0.19 em)
        assert isinstance(font, ImageFont.FreeTypeFont) and font.size >= 14
        assert font.getlength(" ") >= 0.25 * font.size
    calls.clear()
    V.compose_frame(scene, V.label_lines("goal-1", 9, 50, 8), 480)
    assert calls[-1][0] == "success at step 8"

    # In pixels: the gap between "no" and "success" is a word gap, wider than letter gaps.
    font = calls[-1][1]
    from PIL import Image

    img = Image.new("L", (200, 40))
    ImageDraw.Draw(img).text((2, 2), "no success", fill=255, font=font)
    ink = np.flatnonzero(np.asarray(img).max(axis=0) > 64)
    gaps = np.diff(ink) - 1
    assert gaps.max() >= 0.3 * font.size and np.sort(gaps)[-2] < gaps.max() / 2


def test_frames_get_even_sizes_for_h264():
    lines = V.label_lines("a-task", 0, 500, None)
    for shape, width in (((101, 77, 3), 333), ((480, 480, 3), 320), ((210, 160, 3), 481)):
        out = V.compose_frame(np.zeros(shape, dtype=np.uint8), lines, width)
        assert out.shape[0] % 2 == 0 and out.shape[1] % 2 == 0 and out.dtype == np.uint8


def test_bad_video_options_get_one_line(toy_run, capsys):
    for argv, expect in (
        (["--video-fps", "0"], "--video-fps=0 must be in [1, 240]"),
        (["--video-size", "10"], "--video-size=10 must be in [64, 4096]"),
        (["--video-jobs", "0"], "--video-jobs=0 must be in [1, 256]"),
        (["--video-tasks", ","], "--video-tasks=',' lists no tasks"),
        (["--video-tasks", "goal-1,nope"], "video task(s) nope are not tasks of this run"),
        (["--video-format", "avi"], "invalid choice: 'avi'"),
    ):
        assert main(["eval", toy_run, "--video", *argv]) == 2
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# Meta-World: the backend, and one renderer process per task


def test_mujoco_backend_choice(monkeypatch):
    works = {"egl": None, "osmesa": None, "glfw": "no display"}
    monkeypatch.setattr(V, "probe_mujoco_gl", lambda b: works[b])
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    assert V.select_mujoco_gl() == "egl"  # preferred
    works["egl"] = "libEGL is not installed"
    assert V.select_mujoco_gl() == "osmesa"
    monkeypatch.setenv("MUJOCO_GL", "egl")  # the user's choice is kept, and checked
    with pytest.raises(V.RendererUnavailable, match=r"MUJOCO_GL=egl .* cannot render here"):
        V.select_mujoco_gl()
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert V.select_mujoco_gl() == "osmesa"
    monkeypatch.setenv("MUJOCO_GL", "wgl")
    with pytest.raises(V.RendererUnavailable, match="allowed: egl, osmesa, glfw"):
        V.select_mujoco_gl()
    monkeypatch.delenv("MUJOCO_GL")
    works["osmesa"] = "libOSMesa is not installed"
    with pytest.raises(V.RendererUnavailable, match="apt install libosmesa6"):
        V.select_mujoco_gl()


def test_meta_world_renders_each_task_in_its_own_process(monkeypatch, tmp_path):
    run = tmp_path / "mt10"
    run.mkdir()
    (run / "config.yaml").write_text(C.dump_yaml(get_preset("mt10-mtsac")))
    monkeypatch.setattr(V, "select_mujoco_gl", lambda: "egl")
    jobs = []

    def fake(job):
        jobs.append(job)
        return {job.tasks[0]: {"renderer": job.renderer}}

    monkeypatch.setattr(V, "_record_isolated", fake)
    out = V.record_videos(str(run), tasks=["push-v3", "reach-v3"], out_dir=str(tmp_path / "v"))
    assert list(out) == ["reach-v3", "push-v3"]  # in task order
    assert [j.tasks for j in jobs] == [("reach-v3",), ("push-v3",)]
    assert all(j.mujoco_gl == "egl" and j.fps == 30 and j.size == 480 for j in jobs)
    assert out["reach-v3"]["renderer"] == "MuJoCo egl (MUJOCO_GL), one process per task"


@pytest.fixture(scope="module")
def metaworld_run(tmp_path_factory) -> str:
    cfg = get_preset("mt10-mtsac")
    cfg.env.name = "metaworld"
    cfg.env.tasks = ["reach-v3", "drawer-close-v3"]
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    cfg.agent.batch_size = 32
    cfg.warmup_steps = 2
    cfg.replay.capacity = 3200
    cfg.total_steps = 4
    cfg.eval.every = 0
    cfg.eval.final = False
    cfg.checkpoint.every = 0
    run = tmp_path_factory.mktemp("video") / "mw"
    train(cfg, run)
    return str(run)


@pytest.mark.slow
def test_meta_world_frames_do_not_depend_on_the_tasks_rendered_before(metaworld_run, tmp_path):
    """Each task alone in a fresh process vs. both tasks in one batch: the same frames. (In one
    process, gymnasium's MuJoCo renderer draws a task with the GL context of the task created
    last: a red arm and no table, a mean pixel difference of tens.)"""
    try:
        backend = V.select_mujoco_gl()
    except V.RendererUnavailable as e:
        pytest.skip(f"no MuJoCo off-screen renderer works here: {e}")
    kw = {"every": 2, "max_steps": 4, "hold": 0.0, "device": "cpu"}
    alone = {}
    for task in ("reach-v3", "drawer-close-v3"):
        alone.update(V.record_videos(metaworld_run, tasks=[task], out_dir=str(tmp_path / task),
                                     **kw))
    batch = V.record_videos(metaworld_run, out_dir=str(tmp_path / "batch"), **kw)
    assert list(batch) == ["reach-v3", "drawer-close-v3"]
    assert batch["reach-v3"]["renderer"] == f"MuJoCo {backend} (MUJOCO_GL), one process per task"
    scenes = []
    for task in batch:
        a, _ = _decode_mp4(Path(alone[task]["path"]))
        b, _ = _decode_mp4(Path(batch[task]["path"]))
        assert len(a) == len(b) == 3  # steps 0, 2, 4
        band = a[0].shape[0] - 480  # the label band above Meta-World's 480x480 frames
        for fa, fb in zip(a, b, strict=True):
            assert fa.shape == fb.shape and fa.shape[1] == 480
            assert np.abs(fa.astype(float) - fb.astype(float)).mean() < 2, task
            assert fa[band:].std() > 20  # a scene, not a blank frame
        scenes.append(b[0][band:].astype(float))
    # two different scenes were compared (the drawer is there in one only)
    assert (np.abs(scenes[0] - scenes[1]).max(axis=-1) > 40).mean() > 0.005
