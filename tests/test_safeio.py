"""Weights load safely: truncated, corrupt or pickled-code files give a clear error and execute nothing."""

import pickle

import pytest
import torch

from moviedreamer.errors import CheckpointError
from moviedreamer.safeio import load_json, load_safetensors, save_safetensors, torch_load_weights


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_safetensors_round_trip_and_atomic(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors({"a": torch.arange(6.0).view(2, 3)}, path)
    assert torch.equal(load_safetensors(path)["a"], torch.arange(6.0).view(2, 3))
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors({"a": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        load_safetensors(path)
    assert str(path) in str(e.value)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 100)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_safetensors(junk)
    with pytest.raises(CheckpointError, match="no such file"):
        load_safetensors(tmp_path / "absent.safetensors")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        torch_load_weights(empty)


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load") as e:
        torch_load_weights(path)
    assert str(path) in str(e.value)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"  # a bare pickle (not a torch zip) with code in it
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        torch_load_weights(raw)
    assert not marker.exists()


def test_plain_weights_load_and_truncated_zip(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.ones(3)}, path)
    assert torch.equal(torch_load_weights(path)["w"], torch.ones(3))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        torch_load_weights(path)


def test_bad_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="expected valid JSON"):
        load_json(path)
