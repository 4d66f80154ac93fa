"""The sampler's candidates and its report of work: best-of-N segments keep the best-scored candidate, the face
scorer prefers frames that keep the keyframe's faces, and the work the sampler reports is the work it planned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from video_standins import image, tiny_sampler

from moviedreamer.video.conditioning import decode_latents, to_uint8

torch.set_num_threads(1)



@pytest.fixture(scope="module")
def sampler():
    return tiny_sampler()


class BrightestSegment:
    """A segment scorer preferring bright frames (the arithmetic of best-of-N, not faces); records what it saw."""

    fingerprint = "brightest"

    def __init__(self):
        self.references, self.scored = 0, []

    def reference(self, keyframe):
        self.references += 1
        return torch.zeros(0, 1)

    def score(self, frames, reference):
        self.scored.append(float(frames.mean()) / 255)
        return self.scored[-1]


def test_best_of_n_segments_keeps_the_best_scored_candidate(sampler):
    s = sampler.settings
    key = image(4)
    n_frames = s.num_frames + (s.num_frames - s.overlap)  # two segments
    plain = np.stack(list(sampler.frames(key, n_frames, None, seed=3)))
    scorer = BrightestSegment()
    sampler.scorer = scorer
    try:
        # one candidate: the plain sample, nothing scored
        assert np.array_equal(np.stack(list(sampler.frames(key, n_frames, None, seed=3, candidates=1))), plain) and not scorer.scored
        best = np.stack(list(sampler.frames(key, n_frames, None, seed=3, candidates=3, accept=1.0)))
        first = list(scorer.scored)
        assert len(first) == 3 and scorer.references == 1  # only the first segment (candidate_segments 1), all 3 tried
        assert first.index(max(first)) != 0 and not np.array_equal(best[: s.num_frames], plain[: s.num_frames])
        record = []
        list(sampler.latents(key, n_frames, None, seed=3, candidates=3, accept=1.0, record=record))
        kept = to_uint8(decode_latents(sampler.vae, record[0].raw))
        assert float(kept.mean()) / 255 == pytest.approx(max(first))  # the kept segment is the best-scored candidate
        scorer.scored.clear()
        both = list(sampler.frames(key, n_frames, None, seed=3, candidates=2, candidate_segments=0, accept=1.0))
        assert len(both) == n_frames and len(scorer.scored) == 4  # two segments x two candidates
        scorer.scored.clear()
        easy = np.stack(list(sampler.frames(key, n_frames, None, seed=3, candidates=3, accept=0.0)))
        assert len(scorer.scored) == 1 and np.array_equal(easy, plain)  # the first candidate is accepted: the plain sample
    finally:
        sampler.scorer = None
    with pytest.raises(Exception, match="candidates >= 1"):
        sampler.with_settings(candidates=0)
    with pytest.raises(Exception, match="accept must be in"):
        sampler.with_settings(accept=2.0)


def test_segment_scorer_prefers_frames_that_keep_the_keyframe_faces():
    """The real toy face pack: frames showing the keyframe's character score above frames of another character."""
    import tempfile
    from pathlib import Path

    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.rerank.segments import SegmentScorer
    from moviedreamer.script import load_story
    from moviedreamer.script.write import write_story
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import generate_story, read_story_params

    scorer = SegmentScorer(load_face_pack(Path(__file__).resolve().parents[1] / "moviedreamer" / "weights" / "toy" / "faces"))
    with tempfile.TemporaryDirectory() as tmp:
        write_story(generate_story(1.0, seed=5001, resolution=(128, 128)), Path(tmp) / "story.yaml")
        loaded = load_story(Path(tmp) / "story.yaml")
        solo = {}
        for params, (_, _, _, shot) in zip(read_story_params(loaded), loaded.story.shots()):
            if len(shot.characters) == 1 and shot.characters[0] not in solo:
                frames = np.stack([render_frame(params, t, loaded.story.fps, (128, 128)).image for t in range(3)])
                if all(len(scorer.identity.faces.finder.find_faces(f)) == 1 for f in frames):
                    solo[shot.characters[0]] = frames
            if len(solo) == 2:
                break
    assert len(solo) == 2
    (a, b) = solo.values()
    ref = scorer.reference(a[0])
    assert ref.shape[0] == 1
    assert scorer.score(a, ref) > scorer.score(b, ref) + 0.2 and scorer.score(a, ref) > 0.8
    assert scorer.score(a, torch.zeros(0, 1)) < 0.6  # no face in the keyframe: faces in the frames are intruders


class Meter:
    """A video.work.WorkMeter that records what the sampler reports."""

    def __init__(self):
        self.steps, self.segments = [], []

    def advance(self, units):
        self.steps.append(units)

    def segment_done(self, tried):
        self.segments.append(tried)


def test_sampler_reports_the_work_it_planned(sampler):
    """Progress is counted in denoising work (video/work.py): every step reports its units, every segment how many
    candidates it drew, and the plan's cost per candidate is what the steps add up to."""
    s = sampler.settings
    key = image(4)
    n_frames = s.num_frames + (s.num_frames - s.overlap) + 1  # three segments, the last one short
    sampler.scorer = BrightestSegment()
    try:
        guided = {"candidates": 3, "guidance_min": 2.0, "guidance_max": 2.0, "guidance_segments": 1}
        plan = sampler.work(n_frames, **guided)
        assert [w.tries for w in plan] == [3, 1, 1] and plan[0].cost == pytest.approx(2 * s.steps)  # guided: two UNet rows
        assert plan[1].cost == pytest.approx(s.steps) and plan[2].cost < plan[1].cost  # the last segment is shorter
        for accept, tried in ((1.0, [3, 1, 1]), (0.0, [1, 1, 1])):
            meter = Meter()
            list(sampler.frames(key, n_frames, None, seed=3, progress=meter, accept=accept, **guided))
            assert meter.segments == tried and len(meter.steps) == s.steps * sum(tried)
            assert sum(meter.steps) == pytest.approx(sum(w.cost * t for w, t in zip(plan, tried)))
    finally:
        sampler.scorer = None
    assert [w.tries for w in sampler.work(n_frames, candidates=3)] == [1, 1, 1]  # no scorer: one sample per segment
