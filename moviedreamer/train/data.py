"""A streaming reader over the shard format (docs/data_format.md): seeded, sharded across ranks, resumable.

Order. Epoch e visits the episodes in the permutation `rng(seed, e).permutation(n)`, cut to a multiple of the
world size (the remainder — different episodes each epoch — waits for a later epoch). Rank r takes every
world-size-th episode of that list starting at r: within an epoch the ranks' episodes are disjoint and together
cover the cut list. Each episode becomes a list of samples through the stage's `samples(episode, rng)` (e.g. the
VAE's frames), with an rng seeded by (seed, epoch, episode), so the same episode always gives the same samples
in the same epoch. To mix episodes within a batch, `mix` episodes are open at a time and yield in turn.

Resume. `state_dict()` is a few integers (epoch and cursor of the next episode to open, the open episodes and
how far each has been read, whose turn it is); `load_state_dict` re-opens those episodes and continues with
exactly the sample that would have come next.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from safetensors import SafetensorError, safe_open

from moviedreamer.errors import UserError, first_line

FORMAT = "moviedreamer-shards"


class ShardIndex:
    """index.json of a shard folder, with clear errors for a missing or foreign folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "index.json"
        if not self.root.is_dir():
            raise UserError(f"{self.root}: expected a shard folder with index.json (make one with `moviedreamer toyworld dataset -o DIR`), found no such folder")
        if not path.is_file():
            raise UserError(f"{path}: expected the shard index (docs/data_format.md), found no such file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: expected valid JSON, found {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise UserError(f"{path}: expected format '{FORMAT}', found {found!r}")
        episodes = data.get("episodes")
        if not isinstance(episodes, list) or not episodes:
            raise UserError(f"{path}: expected a non-empty 'episodes' list, found {episodes!r}"[:300])
        for i, ep in enumerate(episodes):
            if not isinstance(ep, dict) or not isinstance(ep.get("id"), str) or not isinstance(ep.get("shard"), str):
                raise UserError(f"{path}: episodes[{i}]: expected {{id: str, shard: str, ...}}, found {ep!r}"[:300])
        self.meta = data
        self.episodes: list[dict] = episodes

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def resolution(self) -> tuple[int, int]:
        w, h = self.meta.get("resolution", (0, 0))
        return int(w), int(h)

    def path(self, i: int, suffix: str = ".safetensors") -> Path:
        ep = self.episodes[i]
        return self.root / ep["shard"] / f"{ep['id']}{suffix}"

    def load(self, i: int, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The episode's tensors (only `keys` when given; absent keys are skipped) plus its index entry under `meta`;
        the key "shots" adds the per-shot metadata list of the episode's .json (boxes, face boxes, ...)."""
        path = self.path(i)
        if not path.is_file():
            raise UserError(f"{path}: expected episode {self.episodes[i]['id']} listed in {self.root / 'index.json'}, found no such file")
        try:
            with safe_open(str(path), framework="pt") as f:
                names = f.keys()
                out = {k: f.get_tensor(k) for k in (keys if keys is not None else names) if k in names}
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: expected a valid safetensors episode, found a truncated or corrupt one ({first_line(e)})") from None
        out["meta"] = self.episodes[i]
        out["index"] = i
        if keys is not None and "shots" in keys:
            out["shots"] = self.load_json(i)
        return out

    def load_json(self, i: int) -> list:
        return json.loads(self.path(i, ".json").read_text(encoding="utf-8"))


def _seed(*parts: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])


def epoch_order(n: int, epoch: int, seed: int, rank: int, world_size: int, shuffle: bool = True) -> list[int]:
    """The episodes rank `rank` reads in epoch `epoch` (see the module docstring)."""
    if n < world_size:
        raise UserError(f"the dataset has {n} episodes but there are {world_size} processes: expected at least one episode per process")
    perm = np.random.default_rng(_seed(seed, epoch, 0x5EED)).permutation(n) if shuffle else np.arange(n)
    usable = n - n % world_size
    return [int(i) for i in perm[rank:usable:world_size]]


SamplesFn = Callable[[dict, np.random.Generator], list]


class EpisodeStream:
    """Endless iterator of samples for one rank. See the module docstring for order and resume."""

    def __init__(
        self,
        index: ShardIndex,
        samples: SamplesFn,
        keys: tuple[str, ...] | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        mix: int = 4,
        shuffle: bool = True,
    ):
        self.index, self.samples_fn, self.keys = index, samples, keys
        self.rank, self.world_size, self.seed, self.mix, self.shuffle = rank, world_size, seed, max(1, mix), shuffle
        self._orders: dict[int, list[int]] = {}
        self.epoch, self.cursor, self.turn = 0, 0, 0
        self.slots: list[dict] = []  # {"epoch", "pos", "offset", "samples"}
        epoch_order(len(index), 0, seed, rank, world_size)  # fail early on too few episodes

    # -- order
    def order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = epoch_order(len(self.index), epoch, self.seed, self.rank, self.world_size, self.shuffle)
        return self._orders[epoch]

    def _open(self, epoch: int, pos: int, offset: int = 0) -> dict:
        ep = self.order(epoch)[pos]
        data = self.index.load(ep, self.keys)
        rng = np.random.default_rng(_seed(self.seed, epoch, ep, 0xE915))
        samples = list(self.samples_fn(data, rng))
        return {"epoch": epoch, "pos": pos, "offset": offset, "samples": samples}

    def _next_episode(self) -> dict:
        if self.cursor >= len(self.order(self.epoch)):
            self.epoch, self.cursor = self.epoch + 1, 0
        slot = self._open(self.epoch, self.cursor)
        self.cursor += 1
        return slot

    # -- iteration
    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        for _ in range(10_000):
            while len(self.slots) < self.mix:
                self.slots.append(self._next_episode())
            self.turn %= len(self.slots)
            slot = self.slots[self.turn]
            if slot["offset"] < len(slot["samples"]):
                sample = slot["samples"][slot["offset"]]
                slot["offset"] += 1
                self.turn += 1
                return sample
            self.slots.pop(self.turn)  # exhausted: the next episode takes its place (and its turn)
        raise UserError(f"{self.index.root}: 10000 episodes in a row gave no samples; is the data what this stage expects?")

    def take(self, n: int) -> list:
        return [next(self) for _ in range(n)]

    # -- resume
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "turn": self.turn,
            "slots": [[s["epoch"], s["pos"], s["offset"]] for s in self.slots],
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self.seed,
            "episodes": len(self.index),
        }

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("world_size", self.world_size), ("seed", self.seed), ("episodes", len(self.index))):
            if key in state and state[key] != mine:
                raise UserError(
                    f"cannot resume the data order exactly: the checkpoint was written with {key}={state[key]}, this run has {key}={mine}"
                )
        self.epoch, self.cursor, self.turn = int(state["epoch"]), int(state["cursor"]), int(state["turn"])
        self.slots = [self._open(e, p, o) for e, p, o in state["slots"]]
