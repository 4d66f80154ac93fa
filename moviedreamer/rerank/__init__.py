"""Rerankers for best-of-N sampling, above the encoders and below the stages that sample.

    identity.py   IdentityScorer: does a picture show the given faces (and, with a look check, their clothes)?
    look.py       LookCheck: does the body under a face read as that character's description among the cast?
    segments.py   SegmentScorer: a clip segment scored frame by frame against the keyframe's faces
    best_of.py    best_of: the loop that draws candidates until one is good enough

The composition root (moviedreamer/pipeline/profile.py) builds a scorer from the profile's face pack and vision
encoder and hands it to the keyframe renderer and the clip sampler; neither builds its own.
"""

from moviedreamer.rerank.best_of import Best, best_of
from moviedreamer.rerank.identity import IdentityScorer, candidate_seed
from moviedreamer.rerank.look import LookCheck
from moviedreamer.rerank.segments import SegmentScorer

__all__ = ["Best", "IdentityScorer", "LookCheck", "SegmentScorer", "best_of", "candidate_seed"]
