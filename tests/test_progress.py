"""The clip stage's progress bar counts denoising work (pipeline/progress.py): its total is the work done plus the
expected work left, learnt from how many candidates the reranked segments so far drew."""

import pytest

from moviedreamer.pipeline.progress import ClipWorkBar
from moviedreamer.video.work import SegmentWork


def _run(bar, plan, tried):
    for seg, n in zip(plan, tried):
        for _ in range(n):
            for _ in range(4):  # four steps per candidate
                bar.advance(seg.cost / 4)
        bar.segment_done(n)


def test_total_is_work_done_plus_expected_work_left():
    shot = [SegmentWork(16.0, 8), SegmentWork(8.0), SegmentWork(4.0)]
    seen = []
    bar = ClipWorkBar([(0, shot), (1, shot), (2, shot)], frames_total=60, quiet=True, callback=seen.append)
    assert bar.total() == pytest.approx(3 * (16 * 4.5 + 12))  # before any segment is done: half-way between 1 and 8 tries
    _run(bar, shot, [1, 1, 1])
    assert bar.total() == pytest.approx(28 + 2 * (16 * 2.75 + 12))  # one segment kept its first candidate: (1 + 4.5) / 2
    # a segment whose first two candidates failed (a third is being drawn) is expected to draw more than the one
    # that kept its first: the prior alone, half-way between 3 and 8
    for _ in range(9):
        bar.advance(4.0)
    assert bar.total() - bar.done == pytest.approx(16 * 5.5 - 36 + 12 + (16 * 2.75 + 12))
    bar.advance(12.0)
    bar.segment_done(3)
    _run(bar, shot[1:], [1, 1])
    _run(bar, shot, [8, 1, 1])
    assert bar.done == pytest.approx(bar.total()) == pytest.approx(28 + (48 + 12) + (128 + 12))
    assert [e.done for e in seen] == sorted(e.done for e in seen) and seen[0].done == 0 and seen[-1].total == pytest.approx(bar.done)
    bar.close()
