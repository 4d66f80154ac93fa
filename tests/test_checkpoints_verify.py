"""`moviedreamer checkpoints --verify`: one verdict per weights file, from headers and configs only; truncated, pickled,
wrong-shape and hostile files are named as such and give exit status 2 (issue #41)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load, save_file

from moviedreamer.registry import Registry

TOY = Registry.load("toy")


class Hostile:
    """A pickle that would run a shell command when unpickled."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/moviedreamer-verify-was-unpickled",))


def _profile(tmp_path, components: dict) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({"description": "tampered copies", "root": str(tmp_path), "components": components}))
    return path


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(TOY.components[name].path, tmp_path / name))


def test_intact_files_are_ok_and_each_fault_is_named(tmp_path, run_cli):
    ar, judge, faces, i2v = _copy("ar", tmp_path), _copy("judge", tmp_path), _copy("face_analysis", tmp_path), _copy("i2v", tmp_path)
    truncated = _copy("ar", tmp_path / "t")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    pickled = _copy("judge", tmp_path / "p")
    torch.save(load((pickled / "model.safetensors").read_bytes()), pickled / "model.safetensors")  # a pickle under a safetensors name
    shaped = _copy("judge", tmp_path / "s")
    state = load((shaped / "model.safetensors").read_bytes())
    name = sorted(k for k, v in state.items() if v.ndim == 2)[0]
    state[name] = state[name][:, :-1].contiguous()
    save_file(state, str(shaped / "model.safetensors"))
    onnx = next(faces.glob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:5000])
    good_pt, bad_pt = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save({"positional_embedding": torch.zeros(248, 8)}, good_pt)
    torch.save({"weights": torch.zeros(2), "payload": Hostile()}, bad_pt)
    fmt = {"format": "moviedreamer"}
    profile = _profile(tmp_path, {"ar": {"path": str(ar), **fmt}, "judge": {"path": str(judge), **fmt}, "i2v": {"path": str(i2v), "format": "diffusers"},
                                  "truncated": {"path": str(truncated), **fmt}, "pickled": {"path": str(pickled), **fmt},
                                  "shaped": {"path": str(shaped), **fmt}, "faces": {"path": str(faces), "format": "insightface-pack"},
                                  "good_pt": {"path": str(good_pt), "format": "longclip-pt"}, "bad_pt": {"path": str(bad_pt), "format": "longclip-pt"}})
    Path("/tmp/moviedreamer-verify-was-unpickled").unlink(missing_ok=True)
    code, out, err = run_cli("checkpoints", "--profile", profile, "--verify")
    assert code == 2 and not err
    lines = out.splitlines()
    verdict = {line.split()[0]: line for line in lines[1:-1] if line.split()[0] not in ("faces", "i2v")}
    for ok in ("ar", "judge", "good_pt"):
        assert " ok " in verdict[ok] and "BAD" not in verdict[ok], verdict[ok]
    assert all(" ok " in line for line in lines if line.startswith("i2v"))  # the sharded UNet, conditioning/, the motion prior
    assert "BAD" in verdict["truncated"] and "truncated" in verdict["truncated"]
    assert "BAD" in verdict["pickled"] and "zip archive (a pickled PyTorch checkpoint)" in verdict["pickled"]
    assert "BAD" in verdict["shaped"] and f"tensor '{name}'" in verdict["shaped"] and "config.json expects" in verdict["shaped"]
    assert "BAD" in verdict["bad_pt"] and "system" in verdict["bad_pt"] and "would run code" in verdict["bad_pt"]
    faces_lines = [line for line in lines if line.startswith("faces")]
    assert any("BAD" in line and onnx.name in line and "not a valid ONNX model" in line for line in faces_lines)
    assert any(" ok " in line for line in faces_lines)  # the other ONNX file of the pack
    assert not Path("/tmp/moviedreamer-verify-was-unpickled").exists()  # nothing was unpickled
    assert lines[-1].endswith("with problems, 0 components missing") and " 5 with problems" in lines[-1]


def test_the_toy_profile_verifies(run_cli):
    code, out, _ = run_cli("checkpoints", "--verify")
    body = [line for line in out.splitlines()[1:-1]]
    assert code == 0 and body and all(" ok " in line or "MISSING" in line for line in body), out
    assert any("keyframe_tokenizer" in line and "names and shapes match config.json" in line for line in body)


@pytest.mark.parametrize("cut", [4, 100])
def test_weightfiles_reads_headers_only(tmp_path, cut):
    from moviedreamer.weightfiles import WeightFileError, safetensors_header

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(2, dtype=torch.float16)}, str(path))
    tensors = safetensors_header(path)
    assert tensors["a"].shape == (3, 4) and tensors["b"].dtype == "F16"
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(WeightFileError, match="truncated"):
        safetensors_header(path)
