"""The committed toy profile end to end: every component loads from moviedreamer/weights/toy and a short story
becomes a movie (what `make movie` does, on one shot per scene)."""

import json

import numpy as np
import pytest

from moviedreamer.media import read_frames


def test_toy_profile_is_complete():
    from moviedreamer.pipeline.profile import PIPELINE_COMPONENTS
    from moviedreamer.registry import Registry

    Registry.load("toy").require(PIPELINE_COMPONENTS)  # raises with the missing components' make commands


def test_toy_profile_fits_the_50_mb_budget(repo):
    """docs/architecture.md: the committed toy weights stay small enough for git (<= 50 MB in all)."""
    files = [p for p in (repo / "moviedreamer" / "weights" / "toy").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 50e6


@pytest.mark.slow
def test_toy_profile_makes_a_movie(tmp_path, run_cli):
    story = tmp_path / "story.yaml"
    story.write_text("""title: Two Places
fps: 8
resolution: [128, 128]
seed: 11
characters:
  - id: mia
    name: Mia
    description: a girl with an orange face, big black eyes, a smiling mouth, a blue dress and a red hat
scenes:
  - id: beach
    setting: a sunny beach with blue sea and yellow sand
    shots:
      - {duration: 1, characters: [mia], action: Mia waves, camera: medium shot}
  - id: snow
    setting: a snowy field in winter
    shots:
      - {duration: 1, characters: [mia], action: Mia stands quietly, camera: wide shot}
""")
    out = tmp_path / "out"
    code, _, stderr = run_cli("generate-movie", story, "-o", out, "--quiet")
    assert code == 0, stderr
    frames = np.stack(list(read_frames(out / "movie.mp4")))
    assert frames.shape == (16, 128, 128, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "toy" and manifest["fps"] == 8
    beach, snow = frames[:8].astype(np.float32), frames[8:].astype(np.float32)
    assert frames.std() > 10  # an image, not a flat colour
    # two different settings give two different pictures; within a shot, frames stay close to each other
    assert np.abs(beach.mean((0, 1, 2)) - snow.mean((0, 1, 2))).max() > 10
    assert np.abs(beach[1:] - beach[:-1]).mean() < np.abs(beach - snow).mean()
