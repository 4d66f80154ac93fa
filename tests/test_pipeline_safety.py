"""Never losing a user's work (issue #41): partial runs keep every unit and the movie, foreign folders are refused, files
MovieDreamer did not name survive every command, a failed first run leaves nothing, a second run is refused quickly,
and outputs are published together. `generate-movie` runs through its real command on the stand-in components."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_cli import (  # noqa: F401  (gen: a fixture)
    gen,
    digest,
    movie_frames,
    patch_components,
    snapshot,
    standin_profile,
    story,
)

from moviedreamer.cli import main
from moviedreamer.pipeline.outdir import MARKER

TOP = ("movie.mp4", "storyboard.png", "manifest.json")




def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_partial_runs_keep_every_unit_and_the_full_movie(tmp_path, gen):
    path, out = story(tmp_path), tmp_path / "out"
    assert gen(path, out)[0] == 0
    top = {name: digest(out / name) for name in TOP}
    full = movie_frames(out / "movie.mp4")
    units = set(snapshot(out / "state"))
    code, said, _ = gen(path, out, "--shots", "1:3")
    assert code == 0 and "preview of shots 1–2" in said and "movie in" in said and "unchanged" in said
    assert {name: digest(out / name) for name in TOP} == top and units <= set(snapshot(out / "state"))
    np.testing.assert_array_equal(movie_frames(out / "preview" / "movie.mp4"), full[8:24])  # the preview: shots 1 and 2
    assert json.loads((out / "preview" / "manifest.json").read_text())["complete"] is False
    assert gen(path, out, "--keyframes-only")[0] == 0
    assert {name: digest(out / name) for name in TOP} == top and units <= set(snapshot(out / "state"))
    assert (out / "preview" / "storyboard.png").is_file() and not (out / "preview" / "movie.mp4").exists()  # one preview, consistent
    edited = story(tmp_path, edit=(2, "Mia jumps high"))
    assert gen(edited, out, "--shots", "2:3")[0] == 0  # an edited story, previewed
    assert {name: digest(out / name) for name in TOP} == top and units <= set(snapshot(out / "state"))
    assert gen(edited, out)[0] == 0  # the edited movie replaces the movie, and still deletes no unit
    assert digest(out / "movie.mp4") != top["movie.mp4"] and units <= set(snapshot(out / "state"))
    np.testing.assert_array_equal(movie_frames(out / "movie.mp4")[:16], full[:16])  # shots before the edit reused


def test_files_outside_moviedreamers_units_survive_every_invocation(tmp_path, gen, run_cli):
    path, out = story(tmp_path, n_shots=3), tmp_path / "out"
    assert gen(path, out)[0] == 0
    mine = [out / "notes.txt", out / "state" / "README.txt", out / "state" / "clips" / "mine.txt", out / "shots" / "keep.txt",
            out / "preview" / "mine.txt", out / "storyboard-notes.png", out / "state" / "extra" / "000001-abc.png.bak"]
    for i, f in enumerate(mine):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"user file {i}")
    edited = story(tmp_path, n_shots=3, edit=(1, "Mia jumps high"), name="edited.yaml")
    invocations = [("generate-movie",), ("generate-movie", "--shots", "0:1"), ("generate-movie", "--keyframes-only"),
                   ("generate-movie", "--story", edited), ("generate-movie", "--fresh"), ("clean", "--dry-run"), ("clean",)]
    for invocation in invocations:
        if invocation[0] == "clean":
            code, _, err = run_cli(*invocation, out)
        else:
            extra = [a for a in invocation[1:] if a != "--story" and a != edited]
            code, _, err = gen(edited if edited in invocation else path, out, *extra)
        assert code == 0, (invocation, err)
        assert all(f.read_text() == f"user file {i}" for i, f in enumerate(mine)), invocation


def test_a_folder_moviedreamer_did_not_make_is_refused_unless_empty(tmp_path, gen):
    path = story(tmp_path)
    foreign = tmp_path / "documents"
    (foreign / "state").mkdir(parents=True)
    (foreign / "state" / "taxes.txt").write_text("mine")
    (foreign / "shots").mkdir()
    before = snapshot(foreign)
    code, _, err = gen(path, foreign)
    assert code == 2 and "did not write" in _one_line(err) and str(foreign) in err
    assert snapshot(foreign) == before and not (foreign / MARKER).exists() and not (foreign / ".moviedreamer.lock").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert gen(path, empty)[0] == 0 and (empty / MARKER).is_file() and (empty / "movie.mp4").is_file()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_output_path_that_cannot_be_a_folder_is_one_line(tmp_path, gen, where):
    path = story(tmp_path)
    blocker = tmp_path / "movie.txt"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "out"
    code, _, err = gen(path, out)
    assert code == 2 and "expected an output folder" in _one_line(err) and blocker.read_text() == "not a folder"


def test_a_run_that_fails_before_its_first_unit_leaves_nothing(tmp_path, gen, monkeypatch):
    import pipeline_standins

    path, out = story(tmp_path), tmp_path / "new" / "out"
    monkeypatch.setattr(pipeline_standins.Encoder, "encode_story", lambda self, loaded: (_ for _ in ()).throw(RuntimeError("encoder crashed")))
    with pytest.raises(RuntimeError, match="encoder crashed"):
        gen(path, out)
    assert not (tmp_path / "new").exists()  # the folder, its parent, marker and lock: all taken back
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError):
        gen(path, empty)
    assert list(empty.iterdir()) == []


def test_a_concurrent_run_is_refused_within_seconds(tmp_path, gen):
    path, out = story(tmp_path), tmp_path / "out"
    code = (f"from moviedreamer.pipeline.outdir import OutputFolder; import time\n"
            f"with OutputFolder({str(out)!r}):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        second = subprocess.run([sys.executable, "-m", "moviedreamer.cli", "generate-movie", str(path), "-o", str(out), "--profile", str(gen.profile)],
                                capture_output=True, text=True, timeout=60)
        elapsed = time.perf_counter() - t0
    finally:
        holder.kill()
        holder.wait(10)
    assert second.returncode == 2 and f"pid {holder.pid}" in _one_line(second.stderr)
    assert elapsed < 5, f"refused after {elapsed:.1f} s"


def test_outputs_are_published_together_after_a_kill(tmp_path):
    from moviedreamer.pipeline.publish import JOURNAL, Publication, recover

    out = tmp_path / "out"
    out.mkdir()
    (out / "movie.mp4").write_text("old movie")
    (out / "manifest.json").write_text("old manifest")
    (out / "storyboard-002.png").write_text("old page 2")
    pub = Publication(out)
    pub.stage(out / "movie.mp4").write_text("new movie")
    pub.stage(out / "manifest.json").write_text("new manifest")
    pub.remove(out / "storyboard-002.png")
    real_apply = __import__("moviedreamer.pipeline.publish", fromlist=["_apply"])._apply
    import moviedreamer.pipeline.publish as publish

    publish._apply = lambda root, journal: (_ for _ in ()).throw(KeyboardInterrupt())  # killed right after the journal
    try:
        with pytest.raises(KeyboardInterrupt):
            pub.commit()
    finally:
        publish._apply = real_apply
    assert (out / JOURNAL).is_file() and (out / "movie.mp4").read_text() == "old movie"
    assert recover(out) and not (out / JOURNAL).exists()
    assert (out / "movie.mp4").read_text() == "new movie" and (out / "manifest.json").read_text() == "new manifest"
    assert not (out / "storyboard-002.png").exists() and not list(out.glob("*.publishing*"))


def test_clean_removes_only_stale_units_in_its_own_folders(tmp_path, gen, run_cli):
    path, out = story(tmp_path, n_shots=3), tmp_path / "out"
    assert gen(path, out)[0] == 0
    assert gen(story(tmp_path, n_shots=3, edit=(2, "Mia jumps high")), out)[0] == 0
    (out / "state" / "clips" / "000000-deadbeef.partial.partial.mp4").write_bytes(b"half a clip")
    code, said, _ = run_cli("clean", "--dry-run", out)
    assert code == 0 and "would remove 4 stale files" in said and len(snapshot(out / "state")) == 13
    code, said, _ = run_cli("clean", out)
    assert code == 0 and "removed 4 stale files" in said and len(snapshot(out / "state")) == 9
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    code, _, err = run_cli("clean", foreign)
    assert code == 2 and "not a folder MovieDreamer made" in _one_line(err) and (foreign / "x.txt").exists()


def test_durations_are_reported_exactly(tmp_path, gen):
    code, said, _ = gen(story(tmp_path, n_shots=1, duration=0.125), tmp_path / "out")
    assert code == 0 and "the movie, 0.125 s (1 frame at 8 fps)" in said and " 0 s" not in said
    from moviedreamer.pipeline.shots import format_length

    assert format_length(216, 8) == "27 s (216 frames at 8 fps)" and format_length(3, 24) == "0.125 s (3 frames at 24 fps)"
    assert format_length(8 * 61, 8).startswith("61 s, 1 min 1 s")


def test_threads_sets_the_models_cpu_threads_and_a_bad_count_is_one_line(tmp_path, gen):
    import torch

    from pipeline_cli import story

    path = story(tmp_path, n_shots=1)
    before = torch.get_num_threads()
    try:
        code, _, err = gen(path, tmp_path / "bad", "--threads", "0")
        assert code == 2 and err.strip().count("\n") == 0 and "--threads" in err and not (tmp_path / "bad").exists()
        torch.set_num_threads(2)
        code, _, err = gen(path, tmp_path / "out", "--threads", "1", "--keyframes-only")
        assert code == 0, err
        assert torch.get_num_threads() == 1  # was 2: the flag set it
    finally:
        torch.set_num_threads(before)
