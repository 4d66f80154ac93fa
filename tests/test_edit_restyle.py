"""Restyling a finished movie (moviedreamer/edit/restyle.py, `moviedreamer restyle`) with a tiny random editor saved in
the real folder layout, the toy-world edit pairs it is trained on, and the instruction reader and its warnings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from moviedreamer.edit.instructions import (
    EditChange,
    instruction_warnings,
    parse_instruction,
    write_instruction,
)
from moviedreamer.edit.pairs import random_pair, render_pair, targets
from moviedreamer.media import ClipWriter, read_frames
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.world import ShotParams

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------- instructions


@pytest.mark.parametrize("text, change", [
    ("make it snowy", EditChange("scene", "snow")),
    ("make it night", EditChange("scene", "night")),
    ("move them to a sandy beach", EditChange("scene", "beach")),
    ("make the girl's dress red", EditChange("clothes_colour", "red", "girl", "dress")),
    ("change their clothes to green", EditChange("clothes_colour", "green")),
    ("give the cat a blue cap", EditChange("hat", "blue cap", "cat")),
    ("put a hat on the robots", EditChange("hat", "red hat", "robot")),
    ("remove everyone's hats", EditChange("hat", "none")),
])
def test_instructions_read_as_the_change_they_ask_for(text, change):
    assert parse_instruction(text) == change
    assert instruction_warnings(text) == []


def test_every_templated_instruction_reads_back_as_its_change():
    rng = np.random.default_rng(3)
    for _ in range(200):
        pair = random_pair(rng, size=32)
        assert parse_instruction(pair.instruction) == pair.change, pair.instruction
        assert instruction_warnings(pair.instruction) == []
        assert write_instruction(pair.change, rng)


def test_an_instruction_the_toy_editor_cannot_read_gets_a_clear_warning():
    warnings = instruction_warnings("make it look like Van Gogh")
    assert any("'van'" in w for w in warnings) and any("'gogh'" in w for w in warnings)
    assert "names no change the toy editor knows" in warnings[-1] and "make it snowy" in warnings[-1]
    typo = instruction_warnings("make the dress grene")
    assert typo[0] == "the toy editor cannot read 'grene' (nearest: green)"
    assert "several places" in instruction_warnings("turn it into a desert at night")[-1]


# ------------------------------------------------------------------------------------------------- pairs


def test_a_pair_differs_only_where_the_change_is():
    shot = ShotParams("park", ("mia", "tom", "zed"), "wave", None, "wide", "static", 4.0, layout_seed=5)
    frame = render_frame(shot, 3)
    before, after = render_pair(shot, EditChange("clothes_colour", "green", "boy"), 3)
    changed = np.argwhere((before != after).any(-1))
    assert len(changed) > 20
    x0, y0, x1, y1 = frame.boxes["tom"]  # the only boy: every changed pixel is his
    assert all(x0 <= x < x1 and y0 <= y < y1 for y, x in changed)

    before, after = render_pair(shot, EditChange("hat", "none"), 3)
    assert targets(shot, EditChange("hat", "none")) == ["mia", "tom", "zed"]
    changed = np.argwhere((before != after).any(-1))
    assert len(changed) > 20 and all(any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in frame.boxes.values()) for y, x in changed)

    before, after = render_pair(shot, EditChange("scene", "snow"), 3)
    changed = (before != after).any(-1)
    assert changed.mean() > 0.3  # the background changed, and only the background: every changed pixel shows what the
    background = render_frame(replace(shot, characters=()), 3).image  # shot shows with nobody in it
    assert (before[changed] == background[changed]).all()
    characters = (before != background).any(-1)
    assert characters.sum() > 100 and not (changed & characters).any()


# ------------------------------------------------------------------------------------------------- restyle


@pytest.fixture(scope="module")
def editor_dir(tmp_path_factory):
    """A tiny random editor in the real layout: unet/ + scheduler/ + edit_settings.json naming a tiny VAE folder and
    the toy CLIP's text tower (the paths the export writes, relative to the folder)."""
    from test_edit_anchors import TINY_EDIT_UNET
    from video_standins import tiny_vae

    from moviedreamer.edit.model import EditSettings, InstructionEditor

    root = tmp_path_factory.mktemp("editor")
    tiny_vae().save_pretrained(str(root / "vae"))
    torch.manual_seed(0)
    settings = EditSettings(resolution=32, text_tokens=4, steps=2, batch_frames=2, vae="../vae",
                            text_encoder=str(REPO / "moviedreamer/weights/toy/clip"))
    InstructionEditor.build({**TINY_EDIT_UNET, "cross_attention_dim": 128}, settings).save_pretrained(root / "edit")
    return root / "edit"


def write_movie(folder: Path, shots: int = 2, frames: int = 5) -> Path:
    """A movie folder as generate-movie leaves it: shots/shot-NNNNN.mp4 (32x32, 8 fps)."""
    for s in range(shots):
        with ClipWriter(folder / "shots" / f"shot-{s:05d}.mp4", 8, 32, 32) as w:
            for t in range(frames):
                img = np.full((32, 32, 3), 40 + 80 * s, np.uint8)
                img[8:20, 4 + 2 * t : 14 + 2 * t] = (200, 30, 30)
                w.write(img)
    return folder


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_restyle_writes_a_new_folder_and_resumes_without_redoing_finished_shots(tmp_path, editor_dir, monkeypatch):
    from moviedreamer.edit import restyle_movie
    from moviedreamer.edit.sampler import EditSampler

    movie = write_movie(tmp_path / "movie")
    before = digest(movie)
    out = tmp_path / "restyled"

    def stop_after_first(index, unit):
        if index == 0:
            raise KeyboardInterrupt  # the run is killed after its first shot
    with pytest.raises(KeyboardInterrupt):
        restyle_movie(movie, "make it snowy", out, editor_dir, quiet=True, callback=stop_after_first)
    assert len(list((out / "state" / "clips").glob("*.mp4"))) == 1 and not (out / "movie.mp4").exists()

    edited = []
    real = EditSampler.edit
    monkeypatch.setattr(EditSampler, "edit", lambda self, frames, *a, **kw: edited.append(len(frames)) or real(self, frames, *a, **kw))
    result = restyle_movie(movie, "make it snowy", out, editor_dir, quiet=True)
    assert edited == [5] and result.edited == 1  # only the shot the killed run had not finished
    manifest = json.loads(result.manifest.read_text())
    assert manifest["kind"] == "restyle" and manifest["instruction"] == "make it snowy" and manifest["complete"]
    assert [s["reused"] for s in manifest["shots"]] == [True, False] and manifest["anchors"] == 3
    frames = np.stack(list(read_frames(result.movie)))
    assert frames.shape == (10, 32, 32, 3) and manifest["frames"] == 10  # timing kept: every frame, same rate
    assert [len(list(read_frames(p))) for p in result.shots] == [5, 5]
    assert digest(movie) == before  # the source is never written

    again = restyle_movie(movie, "make it snowy", out, editor_dir, quiet=True)
    assert again.edited == 0 and edited == [5]  # a finished folder: nothing edited again
    other = restyle_movie(movie, "give everyone a red hat", out, editor_dir, quiet=True, anchors=0)
    assert other.edited == 2  # another instruction (or settings) is other units


def test_an_unreadable_instruction_is_warned_about_and_recorded(tmp_path, editor_dir, run_cli):
    movie = write_movie(tmp_path / "movie", shots=1, frames=3)
    code, _, err = run_cli("restyle", movie, "--instruction", "make it look like Van Gogh", "-o", tmp_path / "out", "--model", editor_dir, "-q")
    assert code == 0
    assert "warning: instruction 'make it look like Van Gogh': the toy editor cannot read 'van'" in err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any("names no change" in w for w in manifest["warnings"])


def test_a_missing_or_non_video_input_exits_2_with_one_line_and_writes_nothing(tmp_path, editor_dir, run_cli):
    out = tmp_path / "out"
    code, _, err = run_cli("restyle", tmp_path / "nope.mp4", "--instruction", "make it snowy", "-o", out, "--model", editor_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no such file or folder" in err
    assert not out.exists()
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    code, _, err = run_cli("restyle", fake, "--instruction", "make it snowy", "-o", out, "--model", editor_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "expected a video to restyle" in err
    assert not out.exists()
    empty = tmp_path / "folder"
    empty.mkdir()
    code, _, err = run_cli("restyle", empty, "--instruction", "make it snowy", "-o", out, "--model", editor_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "expected a movie folder" in err
    assert not out.exists()


def test_the_source_folder_is_never_the_output(tmp_path, editor_dir, run_cli):
    movie = write_movie(tmp_path / "movie", shots=1, frames=2)
    before = digest(movie)
    for out in (movie, movie / "restyled"):
        code, _, err = run_cli("restyle", movie, "--instruction", "make it snowy", "-o", out, "--model", editor_dir)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "never writes into its source" in err
    assert digest(movie) == before


def test_an_instructpix2pix_folder_loads_and_edits_and_pickled_weights_are_refused(tmp_path):
    """The paper profile's editor: an InstructPix2Pix diffusers folder (tiny, random) in the published layout."""
    from diffusers import EulerAncestralDiscreteScheduler
    from test_edit_anchors import TINY_EDIT_UNET
    from transformers import CLIPTextConfig, CLIPTextModel
    from video_standins import tiny_vae

    from moviedreamer.edit.model import InstructionEditor
    from moviedreamer.edit.sampler import EditSampler
    from moviedreamer.errors import CheckpointError

    folder = tmp_path / "instruct-pix2pix"
    torch.manual_seed(0)
    editor = InstructionEditor.build({**TINY_EDIT_UNET, "cross_attention_dim": 32}, None)
    editor.unet.save_pretrained(str(folder / "unet"))
    tiny_vae().save_pretrained(str(folder / "vae"))
    CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 max_position_embeddings=77)).save_pretrained(str(folder / "text_encoder"))
    EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(str(folder / "scheduler"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInstructPix2PixPipeline"}))
    (folder / "edit_settings.json").write_text(json.dumps({"resolution": 32, "steps": 2}))  # overrides the paper defaults

    loaded = InstructionEditor.from_pretrained(folder)
    assert loaded.settings.vocabulary == "free" and loaded.settings.text_tokens == 77 and loaded.settings.text_guidance == 7.5
    text = loaded.load_text()
    states = text(["make it snowy", ""])
    assert states.shape == (2, 77, 32) and not torch.allclose(states[0], states[1])
    out = EditSampler(loaded, loaded.load_vae(), text).edit(np.zeros((2, 32, 32, 3), np.uint8), "make it snowy")
    assert out.shape == (2, 32, 32, 3)

    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match="safetensors only"):
        InstructionEditor.from_pretrained(folder)
