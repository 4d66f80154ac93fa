"""The best-of-N loop shared by the keyframe renderer and the clip sampler: draw candidates one at a time, keep the
best scored, stop early once one is good enough (so easy shots cost one sample)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Best(Generic[T]):
    value: T
    score: float
    tried: int  # candidates drawn
    picked: int  # index of the kept one (0 = the plain sample)


def best_of(sample: Callable[[int], T], score: Callable[[T], float], tries: int, accept: float) -> Best[T]:
    """Candidates sample(0), sample(1), ... up to `tries`; the first strictly best score wins ties; stops as soon as a
    candidate scores at least `accept`. With one try the plain sample is returned unscored (score nan)."""
    if tries <= 1:
        return Best(sample(0), float("nan"), 1, 0)
    best = None
    for k in range(tries):
        value = sample(k)
        s = float(score(value))
        if best is None or s > best.score:
            best = Best(value, s, k + 1, k)
        best.tried = k + 1
        if s >= accept:
            break
    return best
