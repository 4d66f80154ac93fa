"""The composition root: the one module that reads a checkpoints profile (moviedreamer/registry.py) and loads its
models, each once, sharing the frozen parts between the stages that use them.

The VAE, the vision tower, the face pack and the descriptor encoder are each used by several stages (the keyframe
tokenizer reads images with the vision tower and decodes through the VAE; the clip model anchors on the vision
tower's embedding and reranks with the face pack). Stage loaders below this floor take folder paths and the parts
already loaded; none of them looks a component up. `Profile` loads each component on first use, so a command that
needs only the encoders never loads the video model.

Every torch model loads in the profile's dtype (`--dtype`, pipeline/placement.py). For the pipeline,
`load_components` turns on stage-wise placement: models load into CPU memory and `Profile.placement` puts each
stage's on the device only while that stage runs.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from pathlib import Path

import torch

from moviedreamer.ar.embed import encode_story
from moviedreamer.ar.sample import ARPlanner
from moviedreamer.encoders.clip_vision import load_vision_encoder
from moviedreamer.encoders.faces import load_face_pack, read_rgb
from moviedreamer.encoders.longclip import embed_texts, load_descriptor_encoder
from moviedreamer.encoders.presence import PresenceCheck, load_presence
from moviedreamer.encoders.text import load_text_tokenizer
from moviedreamer.errors import CheckpointError, UserError
from moviedreamer.pipeline.components import EncodedStory
from moviedreamer.pipeline.placement import Placement
from moviedreamer.registry import Registry
from moviedreamer.script.shot_text import FIXED_SLOTS, story_shot_texts
from moviedreamer.tokenizer.autoencoder import KeyframeTokenizer
from moviedreamer.tokenizer.references import apply_reference_slots, character_reference_embeddings
from moviedreamer.tokenizer.render import KeyframeCondition
from moviedreamer.toyworld.action_judge import load_action_judge
from moviedreamer.toyworld.judge import load_judge
from moviedreamer.vae import load_vae
from moviedreamer.video.conditioning import ClipCondition
from moviedreamer.video.model import AnchoredI2V

log = logging.getLogger(__name__)

TEXT_TOKENIZER, DESCRIPTOR, VISION, FACES = "text_tokenizer", "descriptor_encoder", "vision_encoder", "face_analysis"
FORMATS = {
    TEXT_TOKENIZER: ("hf-tokenizer",),
    DESCRIPTOR: ("open_clip-folder", "longclip-pt", "hf-clip-text", "hf-model"),
    VISION: ("open_clip-folder", "hf-clip-vision"),
    FACES: ("insightface-pack",),
    "keyframe_tokenizer": ("moviedreamer",),
    "i2v": ("diffusers", "diffusers-pipeline"),  # an i2v folder of `train i2v`, or a stock SVD(-XT) pipeline folder
}
ENCODERS = [TEXT_TOKENIZER, DESCRIPTOR, VISION, FACES]
# Components the generate path loads, in the order the stages use them.
PIPELINE_COMPONENTS = [TEXT_TOKENIZER, DESCRIPTOR, VISION, FACES, "vae", "keyframe_tokenizer", "ar", "i2v"]


def resolve_device(device: str | None) -> str:
    """'auto' → cuda when available, else cpu; an unavailable cuda is a clear error, not a traceback."""
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: expected a device this machine has (no CUDA device found); use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"--device: expected cpu, cuda, cuda:N or auto, found {device!r}")
    return device


class Profile:
    """A checkpoints profile and its models, each loaded (and its weights checked) the first time it is used and then
    shared. `text_tokenizer`, `descriptor`, `vision` and `faces` are the script encoders that ar/embed.py reads."""

    def __init__(self, registry: Registry, device: str = "cpu", dtype: torch.dtype | None = None):
        self.registry, self.device, self.dtype = registry, device, dtype  # dtype None: float32 (what the files give)
        self.staged = False  # stage-wise placement off: everything loads onto the device
        self.placement = Placement(device, device)

    @classmethod
    def load(cls, profile: str | None = None, device: str = "cpu", dtype: torch.dtype | None = None) -> "Profile":
        """A profile by name in checkpoints.yaml or by the path of a profile .yaml (None: the default)."""
        return cls(Registry.load(profile), device, dtype)

    def configure(self, device: str, dtype: torch.dtype, staged: bool = True) -> "Profile":
        """The device and dtype its models load in; `staged`: they load into CPU memory and `placement` moves each
        stage's onto the device while it runs (a no-op on the CPU)."""
        self.device, self.dtype, self.staged = device, dtype, staged
        self.placement = Placement(device, "cpu" if staged else device)
        return self

    @property
    def load_device(self) -> str:
        """Where models are put when loaded: where they wait between stages (CPU memory when staged)."""
        return "cpu" if self.staged else self.device

    @property
    def _dtype(self) -> torch.dtype | None:
        """The dtype loaders are asked for (None for float32, so float32 keeps the fingerprints it always had)."""
        return None if self.dtype in (None, torch.float32) else self.dtype

    @property
    def name(self) -> str:
        return self.registry.name

    def path(self, key: str) -> Path:
        return self.registry.path(key)

    def component(self, key: str):
        return self.registry.component(key)

    def has(self, key: str) -> bool:
        """Whether the profile names the component and its files are there."""
        return key in self.registry.components and self.registry.components[key].present

    def require(self, keys) -> None:
        """Every missing component of `keys` reported at once, before anything loads."""
        self.registry.require(keys)

    def _checked_path(self, key: str) -> Path:
        comp = self.registry.component(key)
        formats = FORMATS.get(key)
        if formats and comp.format not in formats:
            raise UserError(f"component '{comp.key}' of profile '{comp.profile}' has format '{comp.format}': expected {', '.join(formats)}")
        return self.registry.path(key)

    # ------------------------------------------------------------------------------------------------ encoders

    @cached_property
    def text_tokenizer(self):
        return load_text_tokenizer(self._checked_path(TEXT_TOKENIZER))

    @cached_property
    def descriptor(self):
        return load_descriptor_encoder(self._checked_path(DESCRIPTOR), self.registry.component(DESCRIPTOR).format, self.load_device, self._dtype)

    @cached_property
    def vision(self):
        return load_vision_encoder(self._checked_path(VISION), self.registry.component(VISION).format, self.load_device, self._dtype)

    @cached_property
    def faces(self):
        return load_face_pack(self._checked_path(FACES), self.device)  # ONNX on onnxruntime (CUDA provider on a GPU), float32

    @cached_property
    def vae(self):
        return load_vae(self.path("vae"), dtype=self._dtype).to(self.load_device)

    def shares_descriptor_space(self) -> bool:
        """Whether the vision encoder embeds images in the descriptor encoder's space (the same CLIP: the toy
        profile's), so that a body region can be compared with a character's description."""
        d, v = self.registry.component(DESCRIPTOR), self.registry.component(VISION)
        return d.format == v.format and d.path.resolve() == v.path.resolve()

    # ------------------------------------------------------------------------------------------------ stages

    @cached_property
    def keyframe_tokenizer(self) -> KeyframeTokenizer:
        """The tokenizer with the profile's vision tower and VAE when it was trained with them (its config's sources
        name the same folders), else the ones it names."""
        path = self._checked_path("keyframe_tokenizer")
        sources = KeyframeTokenizer.read_sources(path)
        vision = self.vision if sources.get("vision_encoder") == self.path(VISION).resolve() else None
        shared_vae = "vae" in self.registry.components and sources.get("vae") == self.path("vae").resolve()
        vae = self.vae if shared_vae and type(self.vae).__name__ == "AutoencoderKL" else None  # an image VAE, not SVD's temporal one
        return KeyframeTokenizer.from_pretrained(path, vision_encoder=vision, vae=vae, device=self.load_device, dtype=self._dtype)

    @cached_property
    def planner(self) -> ARPlanner:
        return ARPlanner.from_pretrained(self.path("ar"), self.load_device, self._dtype)

    @cached_property
    def i2v_is_svd(self) -> bool:
        """Whether the `i2v` component is a stock SVD(-XT) pipeline folder (no fine-tune) rather than a `train i2v` export."""
        return self.component("i2v").format == "diffusers-pipeline" or (self.path("i2v") / "model_index.json").is_file()

    @cached_property
    def i2v(self) -> AnchoredI2V:
        path, dtype = self._checked_path("i2v"), self.dtype or torch.float32
        if self.i2v_is_svd:  # stock SVD: anchored on the keyframe through its CLIP image embedding, nothing else
            model = AnchoredI2V.from_svd(path, dtype=dtype)
            model.settings.tau = 0  # it never learned a last-frame instruction: end frames are not given to it
            return model.eval().to(self.load_device)
        return AnchoredI2V.from_pretrained(path, dtype).to(self.load_device)

    @cached_property
    def i2v_vae_path(self) -> Path:
        """The VAE the clip model was trained with: `i2v/vae` when the folder bundles one (an SVD folder always does),
        else the profile's."""
        bundled = self.path("i2v") / "vae"
        return bundled if (bundled / "config.json").is_file() else self.path("vae")

    @cached_property
    def i2v_vae(self):
        if self.i2v_vae_path == self.path("vae"):
            return self.vae
        return load_vae(self.i2v_vae_path, dtype=self._dtype).to(self.load_device)

    @property
    def floor_vae(self):
        """The VAE whose round trip is the referee's frame-distance floor: the clip model's own latent space (its
        bundled VAE, else the profile's), the profile's VAE without a clip model, None without either."""
        if self.has("i2v"):
            return self.i2v_vae
        return self.vae if self.has("vae") else None

    @cached_property
    def i2v_vision(self):
        """The anchor's CLIP vision encoder: the one the clip model was trained with (its bundled `image_encoder/`, an
        SVD folder's, or the folder its settings name), else the profile's (models saved without that record)."""
        i2v, vision = self.path("i2v"), self.path(VISION).resolve() if self.has(VISION) else None
        source = self.i2v.settings.image_encoder or {}
        where, fmt = i2v / "image_encoder", None
        if not where.is_dir():
            if not source.get("path"):
                return self.vision
            where, fmt = Path(source["path"]).expanduser(), source.get("format")
            where = where if where.is_absolute() else i2v / where  # relative to the i2v folder (how `train i2v` exports it)
            if not where.exists() and where.resolve() != vision:
                raise CheckpointError(f"{i2v / 'moviedreamer_i2v.json'}: the clip model was trained with the image encoder at {where}, "
                                      f"which is not there: copy that folder to {i2v / 'image_encoder'} "
                                      f"(`train i2v` bundles it with model.export_image_encoder: true)")
        if where.resolve() == vision:
            return self.vision
        return load_vision_encoder(where, fmt, self.load_device, self._dtype)

    @cached_property
    def i2v_descriptor(self):
        """The text encoder of the clip model's descriptor token: the one it was trained with (its settings'
        `descriptor_encoder`, relative to the i2v folder), else the profile's (models saved without that record)."""
        where, fmt = i2v_recorded_encoder(self, self.i2v.settings.descriptor_encoder)
        if where is None:
            return self.descriptor
        if not where.exists():
            i2v = self.path("i2v")
            raise CheckpointError(f"{i2v / 'moviedreamer_i2v.json'}: the clip model was trained with the descriptor encoder at {where}, "
                                  f"which is not there: copy that folder into {i2v} and name it in descriptor_encoder.path")
        return load_descriptor_encoder(where, fmt, self.load_device, self._dtype)

    @cached_property
    def presence_probe(self):
        """The profile's learned presence verifier (component `presence`), or None when it has none."""
        return load_presence(self.path("presence")) if self.has("presence") else None

    def presence(self, weight: float, floor: float) -> PresenceCheck | None:
        """The presence probe as a reranking term at `weight`, or None when the weight is 0 or the profile has none."""
        if weight <= 0 or self.presence_probe is None:
            return None
        return PresenceCheck(self.presence_probe, self.vision, weight, floor)

    @cached_property
    def action_judge(self):
        """The toy world's action judge for clips (component `action_judge`; the package's own when the profile names
        none)."""
        return load_action_judge(self.path("action_judge") if "action_judge" in self.registry.components else None)

    @cached_property
    def judge(self):
        """The toy world's frame judge (component `judge`; the package's own when the profile names none)."""
        return load_judge(self.path("judge") if "judge" in self.registry.components else None)


# ---------------------------------------------------------------------------------------------------- pipeline


class StoryEncoder:
    """The pipeline's `ScriptEncoder`: the AR model's sheet and shot scripts, plus what the keyframe decoder
    (descriptor texts + faces of the characters present) and the clip model ("{action}. {camera}") attend to."""

    def __init__(self, profile: Profile, keyframe_tokenizer, descriptor_template: str = "{action}. {camera}"):
        self.encoders, self.keyframe_tokenizer, self.template = profile, keyframe_tokenizer, descriptor_template

    @property
    def fingerprint(self) -> str:
        e = self.encoders
        parts = [e.descriptor.fingerprint, e.faces.fingerprint, str(e.path(TEXT_TOKENIZER)), self.template]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    @torch.no_grad()
    def encode_story(self, loaded) -> EncodedStory:
        story = loaded.story
        sheet, shots, refs = encode_story(loaded, self.encoders, self.keyframe_tokenizer)
        faces = {c.id: c.faces for c in sheet.characters}
        face_dim = next((f.shape[-1] for f in faces.values() if f.numel()), None)
        cast = embed_texts(self.encoders.descriptor, [c.description or "" for c in story.characters])
        by_id = {c.id: c for c in story.characters}
        looked = self.reference_embeddings(loaded)  # characters drawn from their reference frames (tokenizer/references.py)
        cast = apply_reference_slots(cast, [c.id for c in story.characters], looked)
        keyframe_conditions, clip_conditions = [], []
        for _, _, scene, shot in story.shots():
            # one face row per character of the shot, in its order (a zero row: a character without a reference face)
            rows = [faces[c][0].float() if c in faces and faces[c].numel() else None for c in shot.characters]
            face_rows = torch.stack([r if r is not None else torch.zeros(face_dim) for r in rows]) if face_dim and rows else None
            slots = apply_reference_slots(embed_texts(self.encoders.descriptor, story_shot_texts(story, scene, shot)), list(shot.characters),
                                          looked, first=len(FIXED_SLOTS))
            keyframe_conditions.append(KeyframeCondition(slots, face_rows, len(shot.characters), cast))
            looks = embed_texts(self.encoders.descriptor, [by_id[c].description or "" if c in by_id else "" for c in shot.characters])
            looks = apply_reference_slots(looks, list(shot.characters), looked)
            reference = str(loaded.resolve(shot.motion_reference)) if shot.motion_reference else None
            clip_conditions.append(ClipCondition(text=self.template.format(action=shot.action, camera=shot.camera), looks=looks, cast=cast,
                                                 motion_reference=reference))
        return EncodedStory(sheet, shots, refs, keyframe_conditions, clip_conditions, self.fingerprint)

    def reference_embeddings(self, loaded) -> dict:
        """Image embeddings of the characters' reference frames, for a keyframe decoder trained to read them in their
        descriptor slots; none (with a warning) for one that was not: its references then steer the planner only."""
        if not any(c.references for c in loaded.story.characters):
            return {}
        if not getattr(self.keyframe_tokenizer.decoder.config, "reference_prompts", False):
            log.warning("characters' references: this profile's keyframe decoder was not trained to read them (tokenizer "
                        "reference_prompts); they reach the planner only")
            return {}
        return character_reference_embeddings(loaded, self.keyframe_tokenizer.vision, read_rgb)


def i2v_recorded_encoder(profile: Profile, source: dict | None) -> tuple[Path | None, str | None]:
    """(path, format) of the descriptor encoder a clip model's settings record (relative paths: to the i2v folder);
    (None, None) when there is no record or it names the profile's own descriptor encoder."""
    if not (source or {}).get("path"):
        return None, None
    where = Path(source["path"]).expanduser()
    where = where if where.is_absolute() else profile.path("i2v") / where
    if profile.has(DESCRIPTOR) and where.resolve() == profile.path(DESCRIPTOR).resolve():
        return None, None
    return where, source.get("format")
