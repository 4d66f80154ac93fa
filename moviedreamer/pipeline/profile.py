"""Build the pipeline's components (components.py) from a checkpoints profile: the four encoders, the keyframe
tokenizer (its decoder renders keyframes), the AR planner and the anchored I2V model."""

from __future__ import annotations

import hashlib

import torch

from moviedreamer.pipeline.components import Components, EncodedStory


def resolve_device(device: str | None) -> str:
    """'auto' → cuda when available, else cpu; an unavailable cuda is a clear error, not a traceback."""
    from moviedreamer.errors import UserError

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: expected a device this machine has (no CUDA device found); use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"--device: expected cpu, cuda, cuda:N or auto, found {device!r}")
    return device


class StoryEncoder:
    """The pipeline's `ScriptEncoder`: the AR model's sheet and shot scripts, plus what the keyframe decoder
    (descriptor texts + faces of the characters present) and the clip model ("{action}. {camera}") attend to."""

    def __init__(self, encoders, keyframe_tokenizer, descriptor_template: str = "{action}. {camera}"):
        self.encoders, self.keyframe_tokenizer, self.template = encoders, keyframe_tokenizer, descriptor_template

    @property
    def fingerprint(self) -> str:
        e = self.encoders
        parts = [e.descriptor.fingerprint, e.faces.fingerprint, str(e.registry.path("text_tokenizer")), self.template]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    @torch.no_grad()
    def encode_story(self, loaded) -> EncodedStory:
        from moviedreamer.ar.embed import encode_story
        from moviedreamer.tokenizer.render import KeyframeCondition, embed_texts, story_shot_texts
        from moviedreamer.video.conditioning import ClipCondition

        story = loaded.story
        sheet, shots, refs = encode_story(loaded, self.encoders, self.keyframe_tokenizer)
        faces = {c.id: c.faces for c in sheet.characters}
        face_dim = next((f.shape[-1] for f in faces.values() if f.numel()), None)
        cast = embed_texts(self.encoders.descriptor, [c.description or "" for c in story.characters])
        by_id = {c.id: c for c in story.characters}
        keyframe_conditions, clip_conditions = [], []
        for _, _, scene, shot in story.shots():
            # one face row per character of the shot, in its order (a zero row: a character without a reference face)
            rows = [faces[c][0].float() if c in faces and faces[c].numel() else None for c in shot.characters]
            face_rows = torch.stack([r if r is not None else torch.zeros(face_dim) for r in rows]) if face_dim and rows else None
            keyframe_conditions.append(KeyframeCondition(
                embed_texts(self.encoders.descriptor, story_shot_texts(story, scene, shot)), face_rows, len(shot.characters), cast))
            looks = embed_texts(self.encoders.descriptor, [by_id[c].description or "" if c in by_id else "" for c in shot.characters])
            clip_conditions.append(ClipCondition(text=self.template.format(action=shot.action, camera=shot.camera), looks=looks, cast=cast))
        return EncodedStory(sheet, shots, refs, keyframe_conditions, clip_conditions, self.fingerprint)


def shares_descriptor_space(registry) -> bool:
    """Whether the profile's vision encoder embeds images in its descriptor encoder's space (the same CLIP: the toy
    profile's), so that a body region can be compared with a character's description."""
    from moviedreamer.encoders import DESCRIPTOR, VISION

    d, v = registry.component(DESCRIPTOR), registry.component(VISION)
    return d.format == v.format and d.path.resolve() == v.path.resolve()


def keyframe_renderer(keyframe_tokenizer, faces, candidates: int | None = None, look_vision=None, presence=None):
    """The decoder as the pipeline's KeyframeRenderer, reranking up to `candidates` per shot by face match (default:
    the tokenizer folder's `decoder.candidates`); a face pack without a detector renders one candidate, with a warning.
    `look_vision`: an image encoder in the descriptors' space, to check each character's body against its
    description too (tokenizer/look.py). `presence`: a presence check (encoders/presence.py) added to the score."""
    import logging

    from moviedreamer.tokenizer.look import LookCheck
    from moviedreamer.tokenizer.render import TokenizerRenderer
    from moviedreamer.tokenizer.rerank import IdentityScorer

    n = keyframe_tokenizer.decoder.config.candidates if candidates is None else int(candidates)
    if n > 1 and faces.finder is None:
        logging.getLogger(__name__).warning("keyframe reranking off: the face pack has no detector (one candidate per shot)")
        n = 1
    if n <= 1:
        return TokenizerRenderer(keyframe_tokenizer, candidates=1)
    c = keyframe_tokenizer.decoder.config
    look = LookCheck(look_vision, c.look_weight, c.look_temperature) if look_vision is not None and c.look_weight > 0 else None
    scorer = IdentityScorer(faces, look=look, token_weight=c.token_weight, presence=presence)
    return TokenizerRenderer(keyframe_tokenizer, scorer=scorer, candidates=n)


def load_components(registry, device: str | None = "auto", keyframe_candidates: int | None = None) -> Components:
    """Everything `MovieDreamerPipeline` needs, loaded from the profile's folders (checked up front by the CLI)."""
    from moviedreamer.ar.sample import ARPlanner
    from moviedreamer.encoders import Encoders
    from moviedreamer.tokenizer import keyframe_tokenizer_from_registry
    from moviedreamer.video.sampler import load_clip_renderer

    device = resolve_device(device)
    keyframe_tokenizer = keyframe_tokenizer_from_registry(registry, device)
    clips = load_clip_renderer(registry, device)
    encoders = Encoders(registry, device)
    encoder = StoryEncoder(encoders, keyframe_tokenizer, clips.sampler.settings.descriptor_template)
    look_vision = encoders.vision if shares_descriptor_space(registry) else None
    from moviedreamer.encoders.presence import presence_from_registry

    c = keyframe_tokenizer.decoder.config
    presence = presence_from_registry(registry, encoders.vision, c.presence_weight, c.presence_floor)
    renderer = keyframe_renderer(keyframe_tokenizer, encoders.faces, keyframe_candidates, look_vision, presence)
    return Components(encoder, ARPlanner.from_registry(registry, device), renderer, clips,
                      profile=registry.name, window=0)
