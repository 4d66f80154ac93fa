"""Carried weights are written in bounded shards and read back whole, single-file folders included."""

import torch
from safetensors.torch import save_file

from moviedreamer.train import sharded


def test_shards_stay_under_the_bound_and_read_back_whole(tmp_path):
    tensors = {f"block{i}.weight": torch.randn(64, 64) for i in range(6)}  # 16 KB each
    sharded.save(tensors, tmp_path, "weights.safetensors", max_shard_size="40KB")
    files = sorted(p for p in tmp_path.iterdir() if p.suffix == ".safetensors")
    assert len(files) >= 3 and all(p.stat().st_size <= 40_000 for p in files)
    back = sharded.load(tmp_path, "weights.safetensors")
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_a_smaller_save_removes_the_old_shards(tmp_path):
    sharded.save({f"w{i}": torch.randn(64, 64) for i in range(6)}, tmp_path, "ema.safetensors", max_shard_size="40KB")
    sharded.save({"w0": torch.ones(2)}, tmp_path, "ema.safetensors", max_shard_size="40KB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema.safetensors"]
    assert list(sharded.load(tmp_path, "ema.safetensors")) == ["w0"]


def test_a_single_file_written_before_sharding_still_loads(tmp_path):
    save_file({"w": torch.arange(4.0)}, str(tmp_path / "weights.safetensors"))
    assert sharded.exists(tmp_path, "weights.safetensors")
    assert torch.equal(sharded.load(tmp_path, "weights.safetensors")["w"], torch.arange(4.0))
    assert not sharded.exists(tmp_path, "ema.safetensors")
