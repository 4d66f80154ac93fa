"""Every write failure is one line with exit status 2 that names the path and what to do, and running again once the
cause is gone resumes and completes the same movie (issue #41). Disks that fill up, refuse permission or are read-only
are simulated by making the write itself fail with that errno; an image whose header and checksums are valid but whose
pixels do not decode is refused by `validate` (and so before generate-movie writes anything)."""

from __future__ import annotations

import errno
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_cli import gen, movie_frames, patch_components, standin_profile, story  # noqa: F401  (gen: a fixture)


def _fail(code: int, after: int = 0):
    """A stand-in for a write that succeeds `after` times, then fails with errno `code` (ENOSPC: a full disk …)."""
    calls = {"n": 0}

    def fail(real):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        return wrapper

    return fail


def _patch_clip_frames(mp, fail):
    from moviedreamer.media import ClipWriter

    mp.setattr(ClipWriter, "write", fail(ClipWriter.write))


def _patch_keyframe_png(mp, fail):
    real = Path.write_bytes
    wrapped = fail(real)
    mp.setattr(Path, "write_bytes", lambda self, data: wrapped(self, data) if ".partial." in self.name else real(self, data))


def _patch_storyboard(mp, fail):
    real = Image.Image.save
    wrapped = fail(real)
    mp.setattr(Image.Image, "save", lambda self, fp, *a, **k: (wrapped if "storyboard" in str(fp) else real)(self, fp, *a, **k))


def _patch_movie(mp, fail):
    from moviedreamer import media

    mp.setattr(media, "_remux", fail(media._remux))


def _patch_manifest(mp, fail):
    from moviedreamer.pipeline import writer

    mp.setattr(writer, "write_bytes_atomic", fail(writer.write_bytes_atomic))


def _patch_plan(mp, fail):
    from moviedreamer.pipeline import movie

    mp.setattr(movie, "save_safetensors", fail(movie.save_safetensors))


def _patch_folder(mp, fail):
    real = Path.mkdir
    wrapped = fail(real)
    mp.setattr(Path, "mkdir", lambda self, *a, **k: (wrapped if self.name == "out" else real)(self, *a, **k))


CASES = {  # what fails, the errno, how many writes of that kind succeed first, the words the message must hold
    "clip frames, disk full": (_patch_clip_frames, errno.ENOSPC, 5, "no space left"),
    "keyframe, read-only": (_patch_keyframe_png, errno.EROFS, 1, "read-only"),
    "storyboard, disk full": (_patch_storyboard, errno.ENOSPC, 0, "no space left"),
    "movie, disk full": (_patch_movie, errno.ENOSPC, 0, "no space left"),
    "manifest, quota": (_patch_manifest, errno.EDQUOT, 0, "quota"),
    "plan, permission": (_patch_plan, errno.EACCES, 2, "permission denied"),
    "output folder, permission": (_patch_folder, errno.EACCES, 0, "permission denied"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_write_is_one_line_and_a_rerun_completes_the_same_movie(tmp_path, gen, monkeypatch, case):
    patch, code, after, words = CASES[case]
    path = story(tmp_path)
    assert gen(path, tmp_path / "reference")[0] == 0
    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        patch(mp, _fail(code, after))
        status, _, err = gen(path, out)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(out) in lines[0] and words in lines[0] and ("run the same command again" in lines[0] or "run again" in lines[0]), lines[0]
    assert not [p for p in out.rglob("*") if ".partial" in p.name or ".publishing" in p.name] if out.exists() else True
    status, _, err = gen(path, out)
    assert status == 0, err
    np.testing.assert_array_equal(movie_frames(out / "movie.mp4"), movie_frames(tmp_path / "reference" / "movie.mp4"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission bits")
def test_a_folder_without_write_permission_is_one_line(tmp_path, gen):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        status, _, err = gen(story(tmp_path), locked / "out")
    finally:
        locked.chmod(0o700)
    assert status == 2 and "permission denied" in err and len(err.strip().splitlines()) == 1


# --- images whose pixels do not decode ---------------------------------------------------------------------------
def broken_pixels_png(path: Path, how: str = "corrupt") -> Path:
    """A PNG whose signature, chunk layout and CRCs are all valid but whose image data does not decode: its zlib stream
    is corrupted ("corrupt") or cut short ("short"), and the IDAT checksum recomputed to match."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    pos = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[pos:pos + 4])[0]
    body = bytearray(data[pos + 8:pos + 8 + length])
    if how == "corrupt":
        for i in range(10, len(body) - 4, 7):
            body[i] ^= 0x5A
    else:
        body = body[: len(body) // 3]
    chunk = struct.pack(">I", len(body)) + b"IDAT" + bytes(body) + struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data[:pos]) + chunk + bytes(data[pos + 12 + length:]))
    with Image.open(path) as im:
        im.verify()  # the header and every checksum pass: only decoding the pixels finds the fault
    return path


@pytest.mark.parametrize("how", ["corrupt", "short"])
@pytest.mark.parametrize("field", ["end_frame", "faces"])
def test_an_image_whose_pixels_do_not_decode_is_refused_by_validate(tmp_path, gen, run_cli, how, field):
    broken_pixels_png(tmp_path / "bad.png", how)
    path = story(tmp_path, extra=", end_frame: bad.png" if field == "end_frame" else "")
    if field == "faces":
        path.write_text(path.read_text().replace("description: a girl with a round orange face}", "description: a girl, faces: [bad.png]}"))
    code, _, err = run_cli("validate", path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"{path}:") and ("end_frame" in lines[0] or "faces[0]" in lines[0]) and "does not decode" in lines[0], lines[0]
    line, col = lines[0].split(":")[1:3]
    assert int(line) > 1 and int(col) > 1
    status, _, err = gen(path, tmp_path / "out")
    assert status == 2 and not (tmp_path / "out").exists()  # refused before the output folder is touched


def test_validate_opens_the_videos_it_checks(tmp_path, run_cli):
    from moviedreamer.media import ClipWriter

    with ClipWriter(tmp_path / "good.mp4", 8, 32, 32) as w:
        for _ in range(3):
            w.write(np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    good = story(tmp_path, extra=", motion_reference: good.mp4", name="good.yaml")
    code, _, err = run_cli("validate", good)
    assert code == 0 and "motion_reference" not in err  # a good reference is used: nothing to warn about
    bad = story(tmp_path, extra=", motion_reference: bad.mp4", name="bad.yaml")
    code, _, err = run_cli("validate", bad)
    assert code == 2 and "motion_reference" in err and "expected a video that opens and decodes" in err and len(err.strip().splitlines()) == 1
    with ClipWriter(tmp_path / "long.mp4", 1, 32, 32) as w:  # 62 s at 1 fps
        for _ in range(62):
            w.write(np.zeros((32, 32, 3), np.uint8))
    long = story(tmp_path, extra=", motion_reference: long.mp4", name="long.yaml")
    code, _, err = run_cli("validate", long)
    assert code == 2 and "expected a video of at most 60 s, found 62.0 s" in err and len(err.strip().splitlines()) == 1
