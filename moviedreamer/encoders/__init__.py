"""Script encoders: the multimodal story script becomes tokens and embeddings here.

    text tokenizer   identifiers → token ids           text.load_text_tokenizer
    descriptors      free text → [N, D] (≤248 tokens)  longclip.DescriptorEncoder.encode
    vision           images → pooled + patch tokens     clip_vision.VisionEncoder.encode_image
    faces            face images → ArcFace embeddings   faces.FaceEmbedder

Each has one interface and a backend per format of checkpoints.yaml (toy weights in the package, real weights from
local folders). `load_encoders(registry)` gives all four, each loaded on first use. Submodules import torch,
transformers, open_clip and insightface lazily, so importing this package is cheap.
"""

from __future__ import annotations

from functools import cached_property

from moviedreamer.errors import UserError

TEXT_TOKENIZER, DESCRIPTOR, VISION, FACES = "text_tokenizer", "descriptor_encoder", "vision_encoder", "face_analysis"


def text_tokenizer_from_registry(registry):
    from moviedreamer.encoders.text import load_text_tokenizer

    comp = registry.component(TEXT_TOKENIZER)
    _expect(comp, ("hf-tokenizer",))
    return load_text_tokenizer(registry.path(TEXT_TOKENIZER))


def descriptor_encoder_from_registry(registry, device="cpu"):
    from moviedreamer.encoders.longclip import load_descriptor_encoder

    comp = registry.component(DESCRIPTOR)
    _expect(comp, ("open_clip-folder", "longclip-pt", "hf-clip-text", "hf-model"))
    return load_descriptor_encoder(registry.path(DESCRIPTOR), comp.format, device)


def vision_encoder_from_registry(registry, device="cpu"):
    from moviedreamer.encoders.clip_vision import load_vision_encoder

    comp = registry.component(VISION)
    _expect(comp, ("open_clip-folder", "hf-clip-vision"))
    return load_vision_encoder(registry.path(VISION), comp.format, device)


def face_embedder_from_registry(registry, device="cpu"):
    from moviedreamer.encoders.faces import load_face_pack

    comp = registry.component(FACES)
    _expect(comp, ("insightface-pack",))
    return load_face_pack(registry.path(FACES), device)


class Encoders:
    """The four encoders of a profile, each loaded (and its weights checked) the first time it is used."""

    def __init__(self, registry, device="cpu"):
        self.registry, self.device = registry, device

    @cached_property
    def text_tokenizer(self):
        return text_tokenizer_from_registry(self.registry)

    @cached_property
    def descriptor(self):
        return descriptor_encoder_from_registry(self.registry, self.device)

    @cached_property
    def vision(self):
        return vision_encoder_from_registry(self.registry, self.device)

    @cached_property
    def faces(self):
        return face_embedder_from_registry(self.registry, self.device)


def load_encoders(registry, device="cpu", check: bool = True) -> Encoders:
    """All encoders of `registry`; with `check`, every missing component is reported at once, before any loading."""
    if check:
        registry.require([TEXT_TOKENIZER, DESCRIPTOR, VISION, FACES])
    return Encoders(registry, device)


def _expect(comp, formats) -> None:
    if comp.format not in formats:
        raise UserError(f"component '{comp.key}' of profile '{comp.profile}' has format '{comp.format}': "
                        f"the encoders read {', '.join(formats)}")
