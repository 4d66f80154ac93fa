"""The streaming shard reader: rank sharding (disjoint, complete), seeded order, exact resume, clear errors."""

from __future__ import annotations

import json

import pytest

from moviedreamer.errors import UserError
from moviedreamer.train.data import EpisodeStream, ShardIndex, epoch_order
from moviedreamer.train.synthetic import write_synthetic_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), episodes=10, shots=2, frames=3, size=8, episodes_per_shard=4)


def frame_ids(episode, rng):
    """Samples that name themselves: (episode index, shot, frame)."""
    clips = episode["clips"]
    out = [(episode["index"], s, t) for s in range(clips.shape[0]) for t in range(clips.shape[1])]
    return [out[i] for i in rng.permutation(len(out))]


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (10, 3), (7, 7), (12, 4)])
def test_rank_sharding_is_disjoint_and_complete(n, world):
    for epoch in range(3):
        parts = [epoch_order(n, epoch, seed=5, rank=r, world_size=world) for r in range(world)]
        flat = [i for p in parts for i in p]
        assert len(flat) == len(set(flat)), "ranks overlap"
        assert len(flat) == n - n % world, "an epoch covers all but the remainder"
        assert len({len(p) for p in parts}) == 1, "every rank gets the same number of episodes"
    # the order is seeded: same seed same order, another seed or epoch another order
    assert epoch_order(n, 0, 5, 0, world) == epoch_order(n, 0, 5, 0, world)
    if n // world > 2:
        assert epoch_order(n, 0, 5, 0, world) != epoch_order(n, 1, 5, 0, world)
        assert epoch_order(n, 0, 5, 0, world) != epoch_order(n, 0, 6, 0, world)


def test_remainder_rotates_across_epochs():
    seen = set()
    for epoch in range(20):
        for r in range(3):
            seen.update(epoch_order(10, epoch, 0, r, 3))
    assert seen == set(range(10))


def test_streams_of_ranks_read_disjoint_episodes(shards):
    index = ShardIndex(shards)
    per_episode = 2 * 3
    # mix=1: one episode at a time, so the first 5 episodes of each rank are exactly its share of epoch 0
    a = EpisodeStream(index, frame_ids, ("clips",), rank=0, world_size=2, seed=1, mix=1)
    b = EpisodeStream(index, frame_ids, ("clips",), rank=1, world_size=2, seed=1, mix=1)
    sa, sb = a.take(5 * per_episode), b.take(5 * per_episode)  # exactly one epoch each
    ea, eb = {s[0] for s in sa}, {s[0] for s in sb}
    assert not ea & eb and ea | eb == set(range(10))
    assert len(set(sa)) == len(sa) == 30  # every frame once


@pytest.mark.parametrize("cut", [0, 1, 7, 13, 29, 61])
def test_resume_continues_with_the_exact_next_sample(shards, cut):
    index = ShardIndex(shards)

    def stream():
        return EpisodeStream(index, frame_ids, ("clips",), rank=1, world_size=3, seed=9, mix=3)

    full = stream().take(cut + 50)
    first = stream()
    assert first.take(cut) == full[:cut]
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip
    resumed = stream()
    resumed.load_state_dict(state)
    assert resumed.take(50) == full[cut:]


def test_resume_refuses_another_world_size(shards):
    index = ShardIndex(shards)
    s = EpisodeStream(index, frame_ids, ("clips",), rank=0, world_size=2, seed=0)
    s.take(3)
    other = EpisodeStream(index, frame_ids, ("clips",), rank=0, world_size=1, seed=0)
    with pytest.raises(UserError, match="world_size=2"):
        other.load_state_dict(s.state_dict())


def test_episode_load_reads_only_requested_keys(shards):
    ep = ShardIndex(shards).load(3, ("keyframes", "missing_key"))
    assert set(ep) == {"keyframes", "meta", "index"}
    assert ep["keyframes"].shape == (2, 8, 8, 3) and ep["meta"]["id"] == "ep-000003"


def test_clear_errors_for_bad_folders(tmp_path, shards):
    with pytest.raises(UserError, match="no such folder"):
        ShardIndex(tmp_path / "nope")
    with pytest.raises(UserError, match="index.json"):
        ShardIndex(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else", "episodes": []}))
    with pytest.raises(UserError, match="moviedreamer-shards"):
        ShardIndex(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "moviedreamer-shards", "episodes": [{"id": "ep-000000", "shard": "s"}]}))
    with pytest.raises(UserError, match="no such file"):
        ShardIndex(tmp_path).load(0)
    with pytest.raises(UserError, match="at least one episode per process"):
        EpisodeStream(ShardIndex(shards), frame_ids, rank=0, world_size=11)
