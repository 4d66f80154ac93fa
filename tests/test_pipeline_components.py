"""generate-movie with real components: pipeline/profile.py wires the toy encoders, a keyframe tokenizer, an AR
model and an I2V model loaded from their folders (tiny random ones, pipeline/standins.py) into a movie."""

import json
import shutil
from pathlib import Path

import pytest


REFS = Path(__file__).resolve().parents[1] / "stories" / "toy" / "refs"


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    from moviedreamer.testing.pipeline import make_tiny_profile

    return make_tiny_profile(tmp_path_factory.mktemp("profile"))


def _story(tmp_path, action="Mia jumps", faces=True, references=False):
    if faces:
        shutil.copy(REFS / "lea_face.png", tmp_path / "mia_face.png")
        shutil.copy(REFS / "frame_01.png", tmp_path / "frame.png")
    lines = ["title: Tiny", "fps: 8", "resolution: [64, 64]", "seed: 3", "characters:",
             "  - id: mia", "    name: Mia", "    description: a girl with an oval brown face and a yellow crown"]
    lines += ["    faces: [mia_face.png]"] if faces else []
    lines += ["  - {id: zed, name: Zed, description: a robot with a square grey face}"]
    lines += ["references: [frame.png]"] if references else []
    lines += ["scenes:", "  - id: beach", "    setting: a sunny beach", "    shots:",
              "      - {duration: 1, characters: [mia], action: Mia runs to the right, camera: wide shot}",
              f"      - {{duration: 1, characters: [mia, zed], action: {action}, camera: close-up, transition: continuous}}",
              "      - {duration: 1.5, characters: [zed], action: Zed waves, camera: medium shot}"]
    path = tmp_path / "story.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_generate_movie_with_real_components(tmp_path, profile, run_cli):
    import av

    story = _story(tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("generate-movie", story, "-o", out, "--profile", profile, "--quiet")
    assert code == 0, stderr
    with av.open(str(out / "movie.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 8 and stream.codec_context.name == "h264"
    assert len(frames) == 8 + 8 + 12 and frames[0].shape == (64, 64, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "profile" and all(manifest["fingerprints"].values())
    assert sorted(manifest["rendered"]["clip"]) == [0, 1, 2] and (out / "storyboard.png").is_file()
    code, stdout, _ = run_cli("generate-movie", story, "-o", out, "--profile", profile, "--quiet")
    assert code == 0 and "9 units reused" in stdout


def test_same_seed_same_keyframes_and_an_edit_changes_only_later_shots(tmp_path, profile):
    from moviedreamer.pipeline.movie import MovieDreamerPipeline
    from moviedreamer.script import load_story

    pipe = MovieDreamerPipeline.from_profile(str(profile), device="cpu")
    story = _story(tmp_path)
    a = pipe(load_story(story), tmp_path / "a", keyframes_only=True, quiet=True)
    b = pipe(load_story(story), tmp_path / "b", keyframes_only=True, quiet=True)
    # keyframes only is a preview: its manifest is in OUT/preview/, its paths relative to it
    pngs = lambda r: [(r.manifest.parent / s["keyframe"]).read_bytes() for s in json.loads(r.manifest.read_text())["shots"]]  # noqa: E731
    assert a.manifest == tmp_path / "a" / "preview" / "manifest.json"
    assert pngs(a) == pngs(b) and len(set(pngs(a))) == 3
    edited = _story(tmp_path, action="Mia sits down")
    report = pipe(load_story(edited), tmp_path / "a", keyframes_only=True, quiet=True)
    assert sorted(report.rendered["keyframe"]) == [1, 2] and report.reused["keyframe"] == 1


def test_story_encoder_feeds_faces_descriptors_and_references(tmp_path, profile):
    import torch

    from moviedreamer.pipeline.loading import load_components
    from moviedreamer.registry import Registry
    from moviedreamer.script import load_story

    components = load_components(Registry.load(str(profile)), "cpu")
    enc = components.encoder.encode_story(load_story(_story(tmp_path, references=True)))
    faces = [c.faces for c in enc.keyframe_conditions]
    # one face row per character of the shot, in its order; zed has no face file: a zero row (an absent slot)
    assert [f.shape[0] for f in faces] == [1, 2, 1]
    assert torch.allclose(faces[0], enc.sheet.characters[0].faces[0:1]) and torch.allclose(faces[1][0], faces[0][0])
    assert faces[1][1].abs().sum() == 0 and faces[2].abs().sum() == 0
    desc = enc.keyframe_conditions[1].descriptors
    assert desc.shape[0] == 6 and desc[3].abs().sum() == 0 and desc[4:].abs().sum(-1).gt(0).all()  # no style; two characters
    cast = enc.keyframe_conditions[2].cast  # every character's description, for the reranker's look check
    assert cast.shape[0] == 2 and torch.allclose(cast[0], desc[4]) and torch.allclose(cast[1], desc[5])
    assert enc.references.shape[0] == 1 and enc.clip_conditions[2].text == "Zed waves. medium shot"
    clip = enc.clip_conditions[1]  # the segment reranker's presence term: the shot's characters' and the story's descriptions
    assert torch.allclose(clip.looks, desc[4:6]) and torch.allclose(clip.cast, cast) and enc.clip_conditions[2].looks.shape[0] == 1
    plain = components.encoder.encode_story(load_story(_story(tmp_path, faces=False)))
    assert plain.references is None and all(c.faces is None for c in plain.keyframe_conditions)


def test_unavailable_device_is_a_clear_error(tmp_path, profile, run_cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, stderr = run_cli("generate-movie", _story(tmp_path), "-o", tmp_path / "out", "--profile", profile, "--device", "cuda")
    assert code == 2 and "--device cuda" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out" / "movie.mp4").exists()


@pytest.mark.slow
def test_two_ranks_make_the_same_movie_with_real_components(tmp_path, profile):
    import os
    import subprocess
    import sys

    from moviedreamer.media import read_frames

    story = _story(tmp_path)
    cli = [sys.executable, "-m", "moviedreamer.cli", "generate-movie", str(story), "--profile", str(profile), "--quiet", "-o"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run(cli + [str(tmp_path / "one")], capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29600 + os.getpid() % 1000)]
                         + cli[1:] + [str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (list(read_frames(tmp_path / name / "movie.mp4")) for name in ("one", "two"))
    assert len(a) == len(b) == 28 and all((x == y).all() for x, y in zip(a, b))
