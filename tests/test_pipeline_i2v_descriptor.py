"""The clip model embeds the shot's text with the descriptor encoder it was trained with (its settings'
`descriptor_encoder`), not whichever the profile's keyframe stages read; models saved without that record keep the
profile's, and a recorded encoder that is not there is a clear error."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from moviedreamer.errors import CheckpointError
from moviedreamer.pipeline.profile import Profile

TOY = Path(__file__).resolve().parents[1] / "moviedreamer" / "weights" / "toy"


def _profile_with_i2v(tmp_path: Path, descriptor: dict | None) -> Profile:
    i2v = tmp_path / "i2v"
    shutil.copytree(TOY / "i2v", i2v)
    settings = json.loads((i2v / "moviedreamer_i2v.json").read_text())
    if descriptor is not None:
        settings["descriptor_encoder"] = descriptor
    else:  # a model saved before clip models recorded their encoder
        settings.pop("descriptor_encoder", None)
    (i2v / "moviedreamer_i2v.json").write_text(json.dumps(settings))
    profile = Profile.load("toy")
    comp = profile.registry.components["i2v"]
    profile.registry.components["i2v"] = dataclasses.replace(comp, path=i2v)
    return profile


def test_the_clip_model_reads_its_own_descriptor_encoder(tmp_path):
    shutil.copytree(TOY / "clip", tmp_path / "i2v-text")
    profile = _profile_with_i2v(tmp_path, {"path": "../i2v-text", "format": "open_clip-folder"})
    own = profile.i2v_descriptor
    assert own is not profile.descriptor
    assert {f.parent.resolve() for f in own.source[0]} == {(tmp_path / "i2v-text").resolve()}


def test_the_profiles_own_encoder_is_shared_and_an_unrecorded_one_falls_back(tmp_path):
    same = _profile_with_i2v(tmp_path / "a", {"path": str(TOY / "clip"), "format": "open_clip-folder"})
    assert same.i2v_descriptor is same.descriptor
    old = _profile_with_i2v(tmp_path / "b", None)
    assert old.i2v_descriptor is old.descriptor


def test_a_recorded_encoder_that_is_not_there_is_a_clear_error(tmp_path):
    profile = _profile_with_i2v(tmp_path, {"path": "../gone", "format": "open_clip-folder"})
    with pytest.raises(CheckpointError, match=r"moviedreamer_i2v.json: the clip model was trained with the descriptor encoder at .*gone"):
        profile.i2v_descriptor
