"""Ranks of a `torchrun` / deepspeed-launcher job: who renders which shot, and barriers between stages.
Without a launcher this is a single rank and every call is free."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Ranks":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, shot_index: int) -> bool:
        return shot_index % self.world == self.rank

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
