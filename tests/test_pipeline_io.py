"""Output writing and resumable state, independent of the models."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from moviedreamer.errors import UserError
from moviedreamer.pipeline.state import OutputLock, UnitStore, unit_key
from moviedreamer.media import ClipWriter, concat_clips, read_frames
from moviedreamer.pipeline.writer import write_json_atomic, write_storyboard


def _frames(n, color, size=64):
    out = []
    for i in range(n):
        f = np.full((size, size, 3), color, np.uint8)
        f[:, (i * 3) % size] = 255
        out.append(f)
    return out


def test_clip_writer_streams_and_appears_only_when_complete(tmp_path):
    path = tmp_path / "shot.mp4"
    writer = ClipWriter(path, fps=8, width=64, height=64)
    for f in _frames(5, 40):
        writer.write(f)
    assert not path.exists()  # only the .partial file exists while writing
    writer.close()
    frames = list(read_frames(path))
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3)
    assert abs(float(frames[0].mean()) - float(_frames(1, 40)[0].mean())) < 3


def test_aborted_clip_leaves_nothing(tmp_path):
    path = tmp_path / "shot.mp4"
    with pytest.raises(RuntimeError):
        with ClipWriter(path, fps=8, width=64, height=64) as w:
            w.write(_frames(1, 10)[0])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_concat_keeps_every_frame_in_order_and_fps(tmp_path):
    import av

    clips = []
    for k, (n, color) in enumerate([(7, 30), (1, 120), (12, 220)]):
        with ClipWriter(tmp_path / f"s{k}.mp4", fps=8, width=64, height=64) as w:
            for f in _frames(n, color):
                w.write(f)
        clips.append(tmp_path / f"s{k}.mp4")
    movie = tmp_path / "movie.mp4"
    assert concat_clips(clips, movie) == 20
    frames = list(read_frames(movie))
    assert len(frames) == 20
    means = [float(f[:, 40:].mean()) for f in frames]  # the background part of each frame
    assert all(abs(m - 30) < 6 for m in means[:7]) and abs(means[7] - 120) < 6 and all(abs(m - 220) < 6 for m in means[8:])
    with av.open(str(movie)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == 8 and stream.codec_context.name == "h264"
        assert abs(float(stream.duration * stream.time_base) - 20 / 8) < 1 / 8 + 1e-6


def test_storyboard_and_manifest(tmp_path):
    from PIL import Image

    frames = [np.full((64, 64, 3), c, np.uint8) for c in (10, 90, 170, 250)]
    path = write_storyboard(frames, [f"1.{i} Mia runs to the right holding a kite" for i in range(4)], tmp_path / "sb.png", columns=3, title="T")
    img = np.asarray(Image.open(path))
    assert img.shape[1] > 3 * 160 and img.shape[0] > 2 * 160  # 3 columns, 2 rows of tiles ≥ 160 px
    manifest = write_json_atomic({"shots": [1, 2]}, tmp_path / "manifest.json")
    assert manifest.read_text().count("shots") == 1 and not list(tmp_path.glob("*.partial"))


def test_unit_keys_and_store(tmp_path):
    assert unit_key("a", 1, {"x": [1, 2]}) == unit_key("a", 1, {"x": [1, 2]}) != unit_key("a", 2, {"x": [1, 2]})
    store = UnitStore(tmp_path / "state")
    final = store.path("plan", 3, "abc", ".safetensors")
    assert not store.has("plan", 3, "abc", ".safetensors")
    store.write_bytes(final, b"tokens")
    assert store.has("plan", 3, "abc", ".safetensors") and final.read_bytes() == b"tokens" and store.committed == 1
    stale = store.path("plan", 3, "old", ".safetensors")
    store.write_bytes(stale, b"x")
    notes = final.parent / "notes.txt"  # not named as a unit: never removed
    notes.write_text("mine")
    assert store.clean(keep={final}) == 1 and final.exists() and not stale.exists() and notes.exists()


def _hold_lock(out_dir, ready, release):
    with OutputLock(out_dir):
        ready.set()
        release.wait(20)


def test_second_run_on_same_folder_is_refused(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            with OutputLock(tmp_path):
                pass
    finally:
        release.set()
        holder.join(10)
    with OutputLock(tmp_path):  # free again once the first run ended
        pass


def test_lock_released_when_holder_is_killed(tmp_path):
    code = f"from pathlib import Path; from moviedreamer.pipeline.state import OutputLock; import time\nwith OutputLock(Path({str(tmp_path)!r})):\n    print('locked', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError):
            with OutputLock(tmp_path):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with OutputLock(tmp_path):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()


def test_storyboard_draws_the_storys_letters(tmp_path, monkeypatch):
    from PIL import Image

    from moviedreamer.pipeline import fonts

    text = "Zoë läuft — Ωμέγα Жук ñ ç"
    if not fonts.candidates():
        pytest.skip("no TrueType font on this machine (the storyboard falls back to Pillow's own)")
    font = fonts.storyboard_font(text)
    assert all(fonts.has_glyph(font, ch) for ch in text if not ch.isspace())
    frame = np.full((64, 64, 3), 40, np.uint8)
    drawn = np.asarray(Image.open(write_storyboard([frame], [("ë ñ Ж Ω", "")], tmp_path / "a.png")))
    boxes = np.asarray(Image.open(write_storyboard([frame], [("\U0010fffe \U0010fffe \U0010fffe \U0010fffe", "")], tmp_path / "b.png")))
    assert drawn.shape == boxes.shape and not np.array_equal(drawn, boxes)  # letters, not the missing-glyph boxes
    monkeypatch.setattr(fonts, "candidates", lambda: [])  # no font at all: Pillow's own, and still a storyboard
    assert write_storyboard([frame], [("Zoë", "close-up")], tmp_path / "c.png").is_file()


def test_quiet_silences_the_libraries_progress_bars(tmp_path):
    from diffusers import UNetSpatioTemporalConditionModel

    from video_standins import TINY_UNET

    folder = tmp_path / "sharded-unet"  # a sharded diffusers folder: loading it draws diffusers' shard bar
    UNetSpatioTemporalConditionModel(**TINY_UNET).save_pretrained(str(folder), max_shard_size="100KB")
    code = ("import sys\nfrom diffusers import UNetSpatioTemporalConditionModel as U\n"
            f"path = {str(folder)!r}\n"
            "U.from_pretrained(path, local_files_only=True)\nprint('=== quiet ===', file=sys.stderr, flush=True)\n"
            "from moviedreamer.pipeline.quiet import quiet_libraries\nquiet_libraries()\nU.from_pretrained(path, local_files_only=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    loud, quiet = proc.stderr.split("=== quiet ===")
    assert proc.returncode == 0 and "Loading checkpoint shards" in loud
    assert "Loading checkpoint shards" not in quiet and "%|" not in quiet, quiet
