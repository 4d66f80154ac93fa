import json

import pytest

from moviedreamer.errors import MissingComponentError, UserError
from moviedreamer.registry import Registry


def _profile(tmp_path, components):
    path = tmp_path / "myprofile.yaml"
    path.write_text(json.dumps({"root": str(tmp_path / "models"), "components": components}))
    return path


def test_toy_is_default_and_paper_exists(monkeypatch):
    monkeypatch.delenv("MOVIEDREAMER_PROFILE", raising=False)
    assert Registry.load().name == "toy"
    paper = Registry.load("paper")
    assert {"ar_backbone", "descriptor_encoder", "vision_encoder", "face_analysis", "vae", "svd", "sdxl_unet"} <= set(paper.components)


def test_environment_variable_selects_profile(monkeypatch):
    monkeypatch.setenv("MOVIEDREAMER_PROFILE", "paper")
    assert Registry.load().name == "paper"


def test_paper_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOVIEDREAMER_MODELS", str(tmp_path))
    reg = Registry.load("paper")
    assert reg.component("vae").path == tmp_path / "stable-diffusion-xl-base-1.0" / "vae"


def test_missing_component_names_key_and_what_to_put(tmp_path):
    reg = Registry.load(str(_profile(tmp_path, {"vae": {"path": "vae", "format": "diffusers", "made_by": "moviedreamer train vae"}})))
    with pytest.raises(MissingComponentError) as e:
        reg.path("vae")
    msg = str(e.value)
    assert "components.vae" in msg and "config.json + diffusion_pytorch_model.safetensors" in msg and "moviedreamer train vae" in msg


def test_present_component_found(tmp_path):
    reg = Registry.load(str(_profile(tmp_path, {"vae": {"path": "vae", "format": "diffusers"}})))
    folder = tmp_path / "models" / "vae"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert not reg.component("vae").present  # weights still missing
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    assert reg.path("vae") == folder
    assert reg.table() == [("vae", str(folder), "diffusers", "present")]


def test_require_reports_every_missing_component(tmp_path):
    reg = Registry.load(str(_profile(tmp_path, {k: {"path": k, "format": "moviedreamer"} for k in ("ar", "i2v", "judge")})))
    with pytest.raises(MissingComponentError) as e:
        reg.require(["ar", "i2v", "judge"])
    assert str(e.value).count("components.") == 3 and "missing 3 components" in str(e.value)


def test_unknown_profile_and_bad_format(tmp_path):
    with pytest.raises(UserError, match="unknown profile 'nope'"):
        Registry.load("nope")
    with pytest.raises(UserError, match="format: one of"):
        Registry.load(str(_profile(tmp_path, {"vae": {"path": "vae", "format": "mystery"}})))


def test_checkpoints_command(run_cli):
    code, out, _ = run_cli("checkpoints", "--profile", "paper")
    assert code == 0 and "descriptor_encoder" in out and "longclip-pt" in out and "MISSING" in out
