"""The generate path loads every model once: the composition root (pipeline/profile.py) shares the VAE, the vision
tower, the face pack and the descriptor encoder between the keyframe tokenizer, the clip model and the rerankers."""

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

REFS = Path(__file__).resolve().parents[1] / "stories" / "toy" / "refs"


def _count_calls(monkeypatch, counts: Counter, name: str, fn):
    """Replace `fn` in every loaded module of the package that holds it, counting calls under `name`."""
    def counted(*args, **kwargs):
        counts[name] += 1
        return fn(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("moviedreamer"):
            for attr, value in list(vars(module).items()):
                if value is fn:
                    monkeypatch.setattr(module, attr, counted)


def _count_classmethod(monkeypatch, counts: Counter, name: str, cls, method: str = "from_pretrained"):
    original = cls.__dict__[method].__func__

    def counted(klass, *args, **kwargs):
        counts[name] += 1
        return original(klass, *args, **kwargs)

    monkeypatch.setattr(cls, method, classmethod(counted))


@pytest.fixture
def counted_loads(monkeypatch):
    import moviedreamer.pipeline.profile  # noqa: F401  (every loader module imported before patching)
    from moviedreamer import vae
    from moviedreamer.ar.model import ARModel
    from moviedreamer.encoders import clip_vision, faces, longclip, text
    from moviedreamer.tokenizer.autoencoder import KeyframeTokenizer
    from moviedreamer.video.model import AnchoredI2V

    counts = Counter()
    _count_calls(monkeypatch, counts, "text_tokenizer", text.load_text_tokenizer)
    _count_calls(monkeypatch, counts, "descriptor_encoder", longclip.load_descriptor_encoder)
    _count_calls(monkeypatch, counts, "vision_encoder", clip_vision.load_vision_encoder)
    _count_calls(monkeypatch, counts, "face_analysis", faces.load_face_pack)
    _count_calls(monkeypatch, counts, "vae", vae.load_vae)
    _count_classmethod(monkeypatch, counts, "keyframe_tokenizer", KeyframeTokenizer)
    _count_classmethod(monkeypatch, counts, "ar", ARModel)
    _count_classmethod(monkeypatch, counts, "i2v", AnchoredI2V)
    return counts


def test_generate_loads_each_component_once(tmp_path, counted_loads):
    from moviedreamer.pipeline.movie import MovieDreamerPipeline
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.pipeline.loading import load_components
    from moviedreamer.script import load_story
    from moviedreamer.testing.pipeline import make_tiny_profile

    profile_path = make_tiny_profile(tmp_path / "profile")
    settings = tmp_path / "profile" / "i2v" / "moviedreamer_i2v.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "candidates": 2}))  # clips reranked by the face pack
    counted_loads.clear()  # the stand-ins above loaded the toy encoders to size themselves

    shutil.copy(REFS / "lea_face.png", tmp_path / "mia_face.png")
    shutil.copy(REFS / "frame_01.png", tmp_path / "frame.png")
    (tmp_path / "story.yaml").write_text(
        "title: Loads\nfps: 8\nresolution: [64, 64]\nseed: 1\nreferences: [frame.png]\ncharacters:\n"
        "  - {id: mia, name: Mia, description: a girl with an oval brown face, faces: [mia_face.png]}\n"
        "scenes:\n  - id: beach\n    setting: a sunny beach\n    shots:\n"
        "      - {duration: 0.5, characters: [mia], action: Mia waves, camera: wide shot}\n")
    components = load_components(Profile.load(str(profile_path)), "cpu", keyframe_candidates=2)
    MovieDreamerPipeline(components)(load_story(tmp_path / "story.yaml"), tmp_path / "out", quiet=True)

    expected = ["text_tokenizer", "descriptor_encoder", "vision_encoder", "face_analysis", "vae", "keyframe_tokenizer", "ar", "i2v"]
    assert dict(counted_loads) == {k: 1 for k in expected}
    assert components.keyframes.scorer is not None and components.clips.sampler.scorer is not None  # both rerank, one face pack
    assert components.keyframes.tokenizer.vision is components.clips.sampler.vision
    assert components.keyframes.tokenizer.vae is components.clips.sampler.vae
    assert components.keyframes.scorer.faces is components.clips.sampler.scorer.identity.faces


def test_a_tokenizer_trained_with_other_parts_loads_its_own(tmp_path, counted_loads):
    """Sharing is by folder: a tokenizer whose config names another vision encoder is not handed the profile's."""
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.testing.pipeline import make_tiny_profile

    profile_path = make_tiny_profile(tmp_path / "profile")
    cfg_path = tmp_path / "profile" / "keyframe_tokenizer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    clip_copy = tmp_path / "clip_copy"
    shutil.copytree(Path(cfg["settings"]["sources"]["vision_encoder"]["path"]), clip_copy)
    cfg["settings"]["sources"]["vision_encoder"]["path"] = str(clip_copy)
    cfg_path.write_text(json.dumps(cfg))
    counted_loads.clear()
    profile = Profile.load(str(profile_path))
    tokenizer = profile.keyframe_tokenizer
    assert tokenizer.frozen.vision is None and counted_loads["vision_encoder"] == 0
    assert tokenizer.vision is not profile.vision and counted_loads["vision_encoder"] == 2
