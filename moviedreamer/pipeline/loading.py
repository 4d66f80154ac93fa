"""The pipeline's stages built from a loaded `Profile` (pipeline/profile.py, the composition root that loads each
model once): the keyframe renderer with its reranker, the clip renderer with the encoders its model was trained
with, and `load_components`, everything `MovieDreamerPipeline` needs with every model registered for stage-wise
placement."""

from __future__ import annotations

import logging

import torch

from moviedreamer.encoders.cache import fingerprint_files
from moviedreamer.pipeline.components import Components
from moviedreamer.pipeline.placement import Placement, dtype_name, resolve_dtype
from moviedreamer.pipeline.profile import FACES, Profile, StoryEncoder, resolve_device
from moviedreamer.rerank import IdentityScorer, LookCheck, SegmentScorer
from moviedreamer.tokenizer.render import TokenizerRenderer
from moviedreamer.video.sampler import AnchoredSampler, I2VClipRenderer, folder_files

log = logging.getLogger(__name__)


def keyframe_renderer(keyframe_tokenizer, faces, candidates: int | None = None, look_vision=None, presence=None):
    """The decoder as the pipeline's KeyframeRenderer, reranking up to `candidates` per shot by face match (default:
    the tokenizer folder's `decoder.candidates`); a face pack without a detector renders one candidate, with a warning.
    `look_vision`: an image encoder in the descriptors' space, to check each character's body against its
    description too (rerank/look.py). `presence`: a presence check (encoders/presence.py) added to the score."""
    n = keyframe_tokenizer.decoder.config.candidates if candidates is None else int(candidates)
    if n > 1 and faces.finder is None:
        log.warning("keyframe reranking off: the face pack has no detector (one candidate per shot)")
        n = 1
    if n <= 1:
        return TokenizerRenderer(keyframe_tokenizer, candidates=1)
    c = keyframe_tokenizer.decoder.config
    look = LookCheck(look_vision, c.look_weight, c.look_temperature) if look_vision is not None and c.look_weight > 0 else None
    scorer = IdentityScorer(faces, look=look, token_weight=c.token_weight, presence=presence)
    return TokenizerRenderer(keyframe_tokenizer, scorer=scorer, candidates=n)


def clip_renderer(profile: Profile, **overrides) -> I2VClipRenderer:
    """The clip renderer of a profile: its `i2v` model, the VAE and the vision encoder it was trained with, the
    profile's descriptor encoder when the model attends to descriptors, and a segment reranker on the face pack when
    the model samples more than one candidate."""
    model = profile.i2v
    descriptor = profile.i2v_descriptor if model.conditioning.descriptor_proj is not None else None
    scorer = None
    if int(overrides.get("candidates") or model.settings.candidates) > 1:
        if not profile.has(FACES):
            log.warning("i2v: segment reranking off: the profile has no face_analysis pack (one sample per segment)")
        elif profile.faces.finder is None:
            log.warning("i2v: segment reranking off: the face pack has no detector (one sample per segment)")
        else:
            weight = float(overrides.get("presence_weight", model.settings.presence_weight) or 0)
            presence = profile.presence(1.0, float(overrides.get("presence_floor", model.settings.presence_floor))) if weight else None
            scorer = SegmentScorer(profile.faces, presence=presence)
    vision = profile.i2v_vision
    sampler = AnchoredSampler(model, profile.i2v_vae, vision, descriptor, profile.device, scorer=scorer)
    i2v_path, vae_path = profile.path("i2v"), profile.i2v_vae_path
    files = folder_files(i2v_path) + ([] if vae_path.parent == i2v_path else folder_files(vae_path))
    settings = f"i2v:{sorted(overrides.items())}:vision={vision.fingerprint}:desc={getattr(descriptor, 'fingerprint', '')}"
    settings += f":{scorer.fingerprint}" if scorer is not None else ""
    settings += f":{dtype_name(model.dtype)}" if model.dtype != torch.float32 else ""
    settings += ":stock-svd" if profile.i2v_is_svd else ""
    return I2VClipRenderer(sampler, fingerprint_files(files, settings), **overrides)


def load_components(profile, device: str | None = "auto", keyframe_candidates: int | None = None,
                    clip_candidates: int | None = None, dtype: str | torch.dtype | None = "auto") -> Components:
    """Everything `MovieDreamerPipeline` needs, from one profile (a `Profile`, or a registry it wraps): every model loaded once (checked up front by the CLI),
    in `dtype` (auto: bf16 on CUDA, fp32 on the CPU), into CPU memory; `Components.placement` puts each stage's models
    on the device while the stage runs. `keyframe_candidates` / `clip_candidates`: best-of-N overrides (None: the
    profile's settings)."""
    if not isinstance(profile, Profile):
        profile = Profile(profile)
    device = resolve_device(device)
    profile.configure(device, resolve_dtype(dtype, device))
    keyframe_tokenizer = profile.keyframe_tokenizer
    clips = clip_renderer(profile, **({} if clip_candidates is None else {"candidates": int(clip_candidates)}))
    encoder = StoryEncoder(profile, keyframe_tokenizer, clips.sampler.settings.descriptor_template)
    look_vision = profile.vision if profile.shares_descriptor_space() else None
    c = keyframe_tokenizer.decoder.config
    renderer = keyframe_renderer(keyframe_tokenizer, profile.faces, keyframe_candidates, look_vision, profile.presence(c.presence_weight, c.presence_floor))
    placement = register_units(profile, keyframe_tokenizer, profile.planner, clips)
    return Components(encoder, profile.planner, renderer, clips, profile=profile.name, window=0, placement=placement)


def register_units(profile: Profile, keyframe_tokenizer, planner, clips) -> Placement:
    """Name every loaded model for stage-wise placement (pipeline/placement.py STAGES)."""
    placement = profile.placement
    units = {"descriptor_encoder": profile.descriptor, "vision_encoder": profile.vision, "vae": profile.vae if profile.has("vae") else None,
             "keyframe_tokenizer.compressor": keyframe_tokenizer.compressor, "keyframe_tokenizer.decoder": keyframe_tokenizer.decoder,
             "keyframe_vision": keyframe_tokenizer.vision, "keyframe_vae": keyframe_tokenizer.vae, "ar": planner.model,
             "i2v": clips.sampler.model, "i2v_vae": clips.sampler.vae, "i2v_vision": clips.sampler.vision,
             "i2v_descriptor": clips.sampler.descriptor}
    for name, unit in units.items():
        placement.add(name, unit)
    return placement
