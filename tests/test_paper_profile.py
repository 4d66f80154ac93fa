"""The paper profile for real, on tiny random stand-ins in every paper format (moviedreamer/testing/paper.py: the
LLaMA-2 HF folder, the SDXL VAE and UNet folders, LongCLIP's .pt, LAION's ViT-H/14 open_clip folder, an antelopev2
insightface pack, the SVD-XT pipeline folder, and the three components `moviedreamer train` exports from them in
bf16): `generate-movie --profile paper` end to end with faces, references, an end frame and a continuous transition;
every model in the asked dtype, and on the device only in its stages; the clip stage on stock SVD-XT with no
fine-tuned weight; `checkpoints --memory` from the files' headers, equal to what loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

STORY = """title: Crossing
style: cinematic film
fps: 8
resolution: [64, 64]
seed: 5
profile: paper
characters:
  - {id: rose, name: Rose, description: a young woman with red hair in an ivory dress, faces: [rose_face.png]}
  - {id: jack, name: Jack, description: a young man with blond hair and a flat cap, faces: [jack_face.png]}
references: [frame.png]
scenes:
  - id: deck
    setting: the bow of a ship at sunset
    plot: Rose and Jack meet at the railing
    shots:
      - {duration: 1, characters: [rose], action: Rose walks to the railing, camera: wide shot, transition: continuous}
      - {duration: 1, characters: [rose, jack], action: Jack joins Rose, camera: medium shot}
      - {duration: 0.5, characters: [jack], action: Jack smiles, camera: close-up, end_frame: end.png}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from moviedreamer.testing.paper import make_paper_models

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    make_paper_models(root)
    return root


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    folder = tmp_path_factory.mktemp("story")
    for name, colour in (("rose_face.png", (250, 200, 150)), ("jack_face.png", (200, 240, 250))):
        face = np.full((64, 64, 3), 20, np.uint8)
        face[16:48, 16:48] = colour  # the stand-in detector sees a face where the picture is bright
        Image.fromarray(face).save(folder / name)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "frame.png")
    Image.fromarray(np.full((64, 64, 3), (30, 60, 200), np.uint8)).save(folder / "end.png")
    (folder / "story.yaml").write_text(STORY)
    # one short shot with both characters, for the bf16 run (16-bit kernels are slow on a CPU)
    (folder / "short.yaml").write_text(STORY.split("      - {duration: 1, characters: [rose]")[0]
                                       + "      - {duration: 0.5, characters: [rose, jack], action: Jack joins Rose, camera: medium shot}\n")
    return folder / "story.yaml"


@pytest.fixture
def paper(models, monkeypatch):
    """`--profile paper` reads checkpoints.yaml's own entry, its root pointed at the stand-ins."""
    monkeypatch.setenv("MOVIEDREAMER_MODELS", str(models))
    monkeypatch.delenv("MOVIEDREAMER_PROFILE", raising=False)
    return models


def test_generate_movie_through_every_paper_format(paper, story, tmp_path, run_cli, monkeypatch):
    import av

    from moviedreamer.ar.sample import ARPlanner
    from moviedreamer.video.sampler import I2VClipRenderer

    encoded, ends = [], []
    reset, render = ARPlanner.reset, I2VClipRenderer.render
    monkeypatch.setattr(ARPlanner, "reset", lambda self, enc: (encoded.append(enc), reset(self, enc))[1])

    def spy_render(self, keyframe, n_frames, condition, seed, fps, end_frame=None, progress=None):
        ends.append(None if end_frame is None else np.array(end_frame))
        yield from render(self, keyframe, n_frames, condition, seed, fps, end_frame, progress)

    monkeypatch.setattr(I2VClipRenderer, "render", spy_render)

    code, stdout, stderr = run_cli("checkpoints", "--profile", "paper")
    assert code == 0 and "11 present, 0 missing" in stdout, stdout + stderr
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("generate-movie", story, "-o", out, "--profile", "paper", "--quiet")
    assert code == 0, stderr

    with av.open(str(out / "movie.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(frames) == 8 + 8 + 4 and frames[0].shape == (64, 64, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "paper" and sorted(manifest["rendered"]["clip"]) == [0, 1, 2]
    # faces (the antelopev2 pack, 32-wide stand-in ArcFace) and the reference frame (the paper keyframe tokenizer) reached the AR model
    sheet = encoded[0].sheet
    assert [c.faces.shape for c in sheet.characters] == [(1, 32), (1, 32)]
    assert encoded[0].references.shape == (1, 2, 8)
    # the continuous shot ends on the next shot's keyframe, the last shot on its end_frame image; the middle one on nothing
    next_keyframe = np.asarray(Image.open(out / manifest["shots"][1]["keyframe"]).convert("RGB"))
    assert len(ends) == 3 and ends[1] is None
    np.testing.assert_array_equal(ends[0], next_keyframe)
    np.testing.assert_array_equal(ends[2], np.asarray(Image.open(story.parent / "end.png").convert("RGB")))


def test_every_model_in_its_dtype_and_on_the_device_only_in_its_stages(paper, story, tmp_path):
    from moviedreamer.pipeline.memory import memory_plan
    from moviedreamer.pipeline.movie import MovieDreamerPipeline
    from moviedreamer.pipeline.placement import STAGES, unit_state
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.script import load_story

    pipe = MovieDreamerPipeline.from_pretrained("paper", device="cpu", dtype="bf16")
    placement = pipe.c.placement
    seen = {}
    placement.observers.append(lambda stage, p: seen.setdefault(stage, (sorted(p.held(stage)), dict(p.records[-1].states))))
    pipe(load_story(story.parent / "short.yaml"), tmp_path / "out", quiet=True)

    units = placement.units
    assert set(units) == {n for names in STAGES.values() for n in names}  # every model of the path is placed
    assert "face_analysis" not in units  # ONNX on onnxruntime: no torch dtype, not moved
    assert list(seen) == ["encode", "plan", "keyframes", "clips"]
    for stage, (held, states) in seen.items():
        assert held == sorted(n for n in STAGES[stage] if n in units), stage
        for name, (dtype, device) in states.items():
            assert dtype == torch.bfloat16, (stage, name, dtype)
            if name in held:
                assert device == placement.device, (stage, name, device)
    assert [r.stage for r in placement.records] == ["encode", "plan", "keyframes", "clips"]

    # the clip model renders with the image encoder and the VAE it was trained with (SVD's, bundled with the export)
    sampler, profile_vision = pipe.c.clips.sampler, pipe.c.encoder.encoders.vision
    assert sampler.vision is not profile_vision and units["i2v_vision"] is sampler.vision
    assert all("moviedreamer-paper/i2v/image_encoder" in str(f) for f in sampler.vision.source[0])
    assert type(sampler.vae).__name__ == "AutoencoderKLTemporalDecoder"
    assert units["keyframe_vision"] is profile_vision and units["keyframe_vae"] is units["vae"]  # the tokenizer shares the profile's

    # `checkpoints --memory` reads the same sizes from the files' headers as the loaded models have
    plan = memory_plan(Profile.load("paper"), torch.bfloat16)
    for name, unit in units.items():
        assert plan["units"][name].bytes(torch.bfloat16) == unit_state(unit)[2], name


def test_placement_keeps_only_the_running_stage_on_the_device():
    """What a GPU run does, with units that record where they are sent (there is no second device on this machine)."""
    from moviedreamer.pipeline.placement import STAGES, Placement

    class Unit:
        def __init__(self):
            self.device, self.moves = None, 0

        def to(self, device):
            self.device, self.moves = torch.device(device), self.moves + 1
            return self

    placement = Placement("meta", "cpu")
    units = {n: Unit() for names in STAGES.values() for n in names}
    units["i2v_vae"] = units["vae"]  # one model under two names (the toy's clip model renders with the profile's VAE)
    for name, unit in units.items():
        placement.add(name, unit)
    assert all(u.device == torch.device("cpu") for u in units.values())  # loaded where units wait
    for stage in ("encode", "plan", "keyframes", "clips", "plan"):
        placement.enter(stage)
        for name, unit in units.items():
            held = any(n in STAGES[stage] for n, u in units.items() if u is unit)
            assert unit.device == torch.device("meta" if held else "cpu"), (stage, name)


def test_stock_svd_renders_a_clip_anchored_on_the_keyframe(paper, tmp_path):
    """What runs without training: the clip stage on the SVD-XT folder itself, anchored on the keyframe through its
    CLIP image embedding, with SVD's own VAE and image encoder and no fine-tuned weight."""
    from safetensors.torch import load_file

    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.pipeline.loading import clip_renderer
    from moviedreamer.video.conditioning import to_pixels

    entry = yaml.safe_load((paper / "paper.yaml").read_text())
    entry["root"] = str(paper)
    entry["components"]["i2v"] = {"path": "stable-video-diffusion-img2vid-xt", "format": "diffusers-pipeline"}
    (tmp_path / "stock").mkdir()
    (tmp_path / "stock" / "paper.yaml").write_text(yaml.safe_dump(entry))
    profile = Profile.load(str(tmp_path / "stock" / "paper.yaml")).configure("cpu", torch.float32)
    clips = clip_renderer(profile, steps=3)
    sampler, svd = clips.sampler, paper / "stable-video-diffusion-img2vid-xt"

    saved = load_file(str(svd / "unet" / "diffusion_pytorch_model.safetensors"))
    state = sampler.model.unet.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(state[k], v) for k, v in saved.items())
    cond = sampler.model.conditioning
    assert isinstance(cond.image_proj, torch.nn.Identity) and cond.descriptor_proj is None
    assert type(sampler.vae).__name__ == "AutoencoderKLTemporalDecoder" and sampler.settings.tau == 0
    assert all(str(svd / "image_encoder") in str(f) for f in sampler.vision.source[0])

    rng = np.random.default_rng(3)
    keyframe, other = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    embeds = sampler.image_embeds(to_pixels(keyframe))
    torch.testing.assert_close(sampler.model.tokens(embeds), embeds[:, None])  # the anchor: CLIP(keyframe), as SVD takes it
    frames = list(clips.render(keyframe, 6, None, seed=1, fps=7))
    assert len(frames) == 6 and all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(np.stack(frames), np.stack(list(clips.render(keyframe, 6, None, seed=1, fps=7))))
    assert not np.array_equal(np.stack(frames), np.stack(list(clips.render(other, 6, None, seed=1, fps=7))))


def test_checkpoints_memory_prints_the_plan_per_stage(paper, tmp_path, run_cli, monkeypatch):
    code, stdout, _ = run_cli("checkpoints", "--profile", "paper", "--memory", "--dtype", "fp32")
    assert code == 0 and "in fp32" in stdout and "source" in stdout
    for stage in ("encode", "plan", "keyframes", "clips"):
        assert f"\n  {stage} " in stdout
    assert "peak weights on the device" in stdout and "header" in stdout

    monkeypatch.setenv("MOVIEDREAMER_MODELS", str(tmp_path / "nothing-here"))  # no weights at all: the real shapes
    code, stdout, _ = run_cli("checkpoints", "--profile", "paper", "--memory")
    assert code == 0 and "in bf16" in stdout and "shape of llama" not in stdout
    assert "shape of paper-ar" in stdout and "(stage 'plan')" in stdout


def test_an_i2v_whose_image_encoder_is_not_there_is_a_clear_error(paper, tmp_path):
    """The clip model never falls back silently to another encoder than the one it was trained with."""
    import shutil

    from moviedreamer.errors import CheckpointError
    from moviedreamer.pipeline.profile import Profile

    shutil.copytree(paper / "moviedreamer-paper" / "i2v", tmp_path / "i2v")
    shutil.rmtree(tmp_path / "i2v" / "image_encoder")
    entry = yaml.safe_load((paper / "paper.yaml").read_text())
    entry["root"], entry["components"]["i2v"]["path"] = str(paper), str(tmp_path / "i2v")
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(entry))
    with pytest.raises(CheckpointError, match=r"moviedreamer_i2v.json: the clip model was trained with the image encoder at .*image_encoder"):
        Profile.load(str(tmp_path / "paper.yaml")).i2v_vision
