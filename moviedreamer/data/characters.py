"""Faces found on keyframes → characters: agglomerative clustering of ArcFace embeddings (scipy, cosine distance,
average linkage). Two faces join one character when their clusters' mean cosine similarity is above
`1 - max_distance`; ArcFace same-person similarities sit far above that, different people far below."""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

MAX_DISTANCE = 0.6  # cosine distance; ArcFace: same identity typically < 0.4, different > 0.8


def cluster_faces(embeddings: np.ndarray, max_distance: float = MAX_DISTANCE) -> np.ndarray:
    """[M, D] L2-normalised embeddings → [M] character labels 0..K-1, the biggest character first."""
    m = len(embeddings)
    if m == 0:
        return np.zeros(0, np.int64)
    if m == 1:
        return np.zeros(1, np.int64)
    tree = linkage(np.asarray(embeddings, np.float64), method="average", metric="cosine")
    raw = fcluster(tree, t=max_distance, criterion="distance")
    ids, counts = np.unique(raw, return_counts=True)
    first_seen = {c: int(np.argmax(raw == c)) for c in ids}
    order = sorted(ids, key=lambda c: (-counts[ids == c][0], first_seen[c]))  # biggest first, ties by first appearance
    remap = {c: i for i, c in enumerate(order)}
    return np.array([remap[c] for c in raw], np.int64)


def purity(labels: np.ndarray, truth: list) -> float:
    """Fraction of faces whose cluster's majority identity is their own (1.0 = no cluster mixes people)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    agree = 0
    for c in np.unique(labels):
        members = [truth[i] for i in np.flatnonzero(labels == c)]
        agree += max(members.count(t) for t in set(members))
    return agree / len(labels)
