"""`moviedreamer train ar`: the autoregressive keyframe model (LLaMA + projections + GMM head), docs/ar.md.

Each episode becomes one sequence (cut every `max_shots` shots): its character sheet, optional few-shot reference
frames, then every shot's script and keyframe tokens. Loss: GMM NLL + L1 + L2 on the keyframe tokens (weights in
`options`). Anti-overfitting switches, each drawn per episode from the stream's seeded rng or per step from the
harness's seeded torch RNG: `hflip` (mirrored keyframes, left/right swapped in the script), `reverse` (shot order
reversed), `random_face` (a random face crop of each character instead of its first), `model.dropout` (0.5 in the
projection MLPs) and `token_mask` (input tokens hidden from later queries in the causal mask).

Inputs: the text tokenizer and descriptor encoder of `options.encoders` (a checkpoints profile); face embeddings
precomputed in the shard (`face_embeddings`, aligned with `faces`: prepare-data writes them) or computed from the crops
with the profile's face embedder; keyframe tokens precomputed (`keyframe_tokens`, `keyframe_tokens_hflip`) or encoded
with the profile's frozen keyframe tokenizer (moviedreamer/ar/tokens.py) ONCE, before the model is built: every rank
encodes its share of the episodes into OUT/keyframe_tokens/<tokenizer fingerprint>/ (`options.token_cache`), the
ranks meet, the tokenizer is released, and every epoch (and a resumed run) reads the cache.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moviedreamer.ar.embed import build_sequence, encode_script
from moviedreamer.ar.gmm import gmm_loss
from moviedreamer.ar.model import ARConfig, ARModel
from moviedreamer.ar.tokens import TokenSource, encode_frames
from moviedreamer.encoders.cache import fingerprint_files
from moviedreamer.errors import UserError, first_line
from moviedreamer.pipeline.profile import Profile
from moviedreamer.script.models import Story
from moviedreamer.train.config import format_validation_error
from moviedreamer.train.data import ShardIndex
from moviedreamer.train.harness import Stage
from moviedreamer.toyworld.story import face_owners
from moviedreamer.train.stages.ar_draws import episode_order, pick_faces, pick_references
from moviedreamer.train.stages.ar_references import check_modes, draw_character_references, portrait_frames, with_description
from moviedreamer.train.stages.ar_restyle import Restyler, draw_restyle

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class MemoDescriptor:
    """The descriptor encoder with every text's embedding kept: episodes repeat their texts epoch after epoch."""

    def __init__(self, encoder):
        self.encoder, self.embed_dim, self.memo = encoder, encoder.embed_dim, {}

    def encode(self, texts: list[str]):
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if new:
            self.memo.update(zip(new, self.encoder.encode(new).embeddings.float()))
        return SimpleNamespace(embeddings=torch.stack([self.memo[t] for t in texts]) if texts else torch.zeros(0, self.embed_dim))


class ARModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backbone: Path | None = Field(None, description="a Hugging Face LLaMA folder to start from (paper: LLaMA-2-7B)")
    backbone_component: str | None = Field(None, description="PROFILE.KEY of checkpoints.yaml naming that folder, e.g. paper.ar_backbone")
    backbone_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    init_from: Path | None = Field(None, description="an AR model folder (config.json + model.safetensors) to continue from")
    hidden_size: int = Field(64, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=8)
    max_position_embeddings: int = Field(1024, ge=16)
    rope_theta: float = 10000.0
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    desc_dim: int | None = Field(None, ge=1, description="None: the descriptor encoder's")
    face_dim: int | None = Field(None, ge=1, description="None: measured from the data")
    token_dim: int | None = Field(None, ge=1, description="None: measured from the data")
    n_tokens: int = Field(2, ge=1, le=8)
    gmm_components: int = Field(8, ge=1)
    mlp_hidden: int | None = Field(None, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    head_dropout: float = Field(0.0, ge=0, lt=1)
    window_shots: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0)


class AROptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encoders: str = Field("toy", description="checkpoints profile (name or .yaml) for the text tokenizer, descriptor/face encoders, keyframe tokenizer")
    encoder_device: str = "cpu"
    max_shots: int = Field(16, ge=1, description="shots per training sequence")
    nll_weight: float = Field(1.0, ge=0)
    l1_weight: float = Field(1.0, ge=0)
    l2_weight: float = Field(1.0, ge=0)
    hflip: bool = True
    hflip_swap_words: bool = True
    reverse: bool = True
    random_face: bool = True
    face_drop: float = Field(0.1, ge=0, le=1, description="chance a character has no face in the sheet (scripts without faces)")
    token_mask: float = Field(0.1, ge=0, lt=1)
    references: int = Field(10, ge=0, description="few-shot frames inserted after the sheet")
    references_p: float = Field(0.5, ge=0, le=1, description="fraction of sequences that get them")
    references_from: Literal["keyframes", "clips"] = "keyframes"
    restyle_p: float = Field(0.0, ge=0, le=1, description="of the sequences with references, the fraction where one character is "
                             "re-rendered in clothes of another colour while its description keeps the old one (ar_restyle.py; toy world)")
    history_hide_p: float = Field(0.0, ge=0, le=1, description="of the sequences with references, the fraction whose earlier shots' "
                                  "keyframe tokens are hidden from later shots: the look must come from the sheet and the references")
    character_references: int = Field(0, ge=0, le=8, description="portraits of one character inside its sheet entry (ar_references.py; "
                                      "toy world): 0 = off")
    character_references_p: float = Field(0.5, ge=0, le=1, description="fraction of sequences that get them")
    character_modes: dict[str, float] = Field(default_factory=lambda: {"agree": 0.3, "restyle": 0.4, "vague": 0.3},
                                              description="weights of agree / restyle / vague (ar_references.py)")

    @field_validator("character_modes")
    @classmethod
    def _modes(cls, v):
        return check_modes(v)
    stats_episodes: int = Field(16, ge=1, description="episodes read to measure the token mean/std")
    token_cache: bool = Field(True, description="encode keyframe tokens missing from the shards once, into OUT/keyframe_tokens/, "
                              "before training (then the tokenizer is released)")
    gradient_checkpointing: bool = False
    eval_sequences: int = Field(8, ge=0)
    export_dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights as saved (16-bit: half the size; they load "
                                                                 "in the dtype generate-movie asks for, --dtype)")


class ARStage(Stage):
    name = "ar"
    keys = ("keyframes", "faces", "face_identity", "face_shot", "face_embeddings", "keyframe_tokens", "keyframe_tokens_hflip")
    mix = 4

    def __init__(self, cfg):
        super().__init__(cfg)
        self.args, self.opts = self.parse_sections(ARModelArgs, AROptions)
        a = self.args
        if sum(x is not None for x in (a.backbone, a.backbone_component, a.init_from)) > 1:
            raise UserError("model: give at most one of backbone, backbone_component, init_from")
        if a.backbone_component is not None and a.backbone_component.count(".") != 1:
            raise UserError(f"model.backbone_component: expected PROFILE.KEY (e.g. paper.ar_backbone), found {a.backbone_component!r}")
        if a.hidden_size % a.heads or a.heads % (a.kv_heads or a.heads):
            raise UserError(f"model: hidden_size {a.hidden_size} must be divisible by heads {a.heads}, and heads by kv_heads {a.kv_heads}")
        if self.opts.references_from == "clips":
            self.keys = self.keys + ("clips",)
        self._stats = None
        self._faces_cache: dict = {}
        self._story_cache: dict = {}

    # --- inputs ----------------------------------------------------------------------------------------------
    @cached_property
    def profile(self) -> Profile:
        """The frozen encoders and keyframe tokenizer, from the profile named by options.encoders."""
        return Profile.load(self.opts.encoders, self.opts.encoder_device)

    @cached_property
    def text_tokenizer(self):
        return self.profile.text_tokenizer

    @cached_property
    def descriptor(self):
        return MemoDescriptor(self.profile.descriptor)

    @cached_property
    def face_embedder(self):
        return self.profile.faces

    @cached_property
    def tokens(self):
        return TokenSource(lambda: self.profile.keyframe_tokenizer, self.opts.encoder_device, cache_dir=self.token_cache_dir())

    def token_cache_dir(self) -> Path | None:
        """OUT/keyframe_tokens/<fingerprint of the keyframe tokenizer folder>: another tokenizer, another cache."""
        if not self.opts.token_cache or not self.profile.has("keyframe_tokenizer"):
            return None
        folder = self.profile.path("keyframe_tokenizer")
        return self.cfg.out / "keyframe_tokens" / fingerprint_files([folder / "config.json", folder / "model.safetensors"])

    def precompute_tokens(self) -> None:
        """The keyframe tokens the shards lack (and their mirrored ones with hflip), encoded once into the cache: each
        rank its share of the episodes; then the tokenizer is released unless training still needs it (references from
        clips, restyled sequences)."""
        if self.tokens.cache_dir is None:
            return
        # torch.distributed: the process group the harness set up (a world of one without a launcher)
        import torch.distributed as td

        rank, world = (td.get_rank(), td.get_world_size()) if td.is_initialized() else (0, 1)
        flips = (False, True) if self.opts.hflip else (False,)
        keys = ("keyframe_tokens", "keyframe_tokens_hflip")
        for i in range(rank, len(self.index), world):
            episode = self.index.load(i, keys)
            if all(keys[f] in episode for f in flips):
                continue  # the shard has them
            episode = self.index.load(i, ("keyframes",) + keys)
            for flip in flips:
                self.tokens.keyframes(episode, flip)
        if td.is_initialized() and world > 1:
            td.barrier()
        if self.opts.references_from != "clips" and not self.opts.restyle_p and not self.opts.character_references:
            self.tokens.release()

    @cached_property
    def index(self):
        return ShardIndex(self.cfg.data)

    def story(self, episode: dict):
        path = self.index.path(episode["index"], ".yaml")
        if self._story_cache.get("path") != path:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    data.pop("resolution", None)  # unused here (and small synthetic frames are below the user minimum)
                story = Story.model_validate(data)
            except ValidationError as e:
                raise UserError(f"{path}: expected the episode's script in the story format:\n{format_validation_error(e)}") from None
            except (OSError, yaml.YAMLError) as e:
                raise UserError(f"{path}: expected the episode's script (YAML), found: {first_line(e)}") from None
            self._story_cache = {"path": path, "story": story}
        return self._story_cache["story"]

    def face_embeddings(self, episode: dict) -> dict[str, torch.Tensor]:
        """Character id → its face embeddings [n, Df] in this episode (precomputed, or embedded from the crops)."""
        ep_id = episode["meta"]["id"]
        if ep_id not in self._faces_cache:  # every episode's, embedded once per run (a few KB each)
            ident = episode.get("face_identity")
            if ident is None or not len(ident):
                emb = torch.zeros(0, 0)
            elif "face_embeddings" in episode:
                emb = episode["face_embeddings"].float()
            else:
                emb = self.face_embedder.embed_crops([c.numpy() for c in episode["faces"]]).float()
            names = self.index.meta.get("identities", [])
            owners = face_owners(self.story(episode), names)  # a face name -> the script ids with that face
            out: dict[str, list] = {}
            for i, e in zip((ident.tolist() if ident is not None else []), emb):
                name = names[i] if i < len(names) else str(i)
                for cid in owners.get(name, [name]):
                    out.setdefault(cid, []).append(e)
            self._faces_cache[ep_id] = {k: torch.stack(v) for k, v in out.items()}
        return self._faces_cache[ep_id]

    # --- model ----------------------------------------------------------------------------------------------
    def token_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._stats is None:
            toks = [self.tokens.keyframes(self.index.load(i, self.keys)) for i in range(min(len(self.index), self.opts.stats_episodes))]
            flat = torch.cat([t.reshape(-1, t.shape[-1]) for t in toks]).float()
            std = flat.std(0).clamp_min(1e-3) if len(flat) > 1 else torch.ones(flat.shape[-1])
            self._stats = (flat.mean(0), std)
        return self._stats

    def _face_dim(self) -> int:
        for i in range(min(len(self.index), self.opts.stats_episodes)):
            faces = self.face_embeddings(self.index.load(i, self.keys))
            if faces:
                return next(iter(faces.values())).shape[-1]
        raise UserError(f"{self.cfg.data}: no face crops in the first episodes to measure the face embedding size: set model.face_dim")

    def build_model(self):
        a = self.args
        self.precompute_tokens()
        mean, std = self.token_stats()
        ar = dict(desc_dim=a.desc_dim or self.descriptor.embed_dim, face_dim=a.face_dim or self._face_dim(), token_dim=a.token_dim or mean.shape[-1],
                  n_tokens=a.n_tokens, gmm_components=a.gmm_components, mlp_hidden=a.mlp_hidden, dropout=a.dropout, head_dropout=a.head_dropout,
                  attn_implementation=a.attn_implementation, window_shots=a.window_shots, temperature=a.temperature)
        if ar["token_dim"] != mean.shape[-1]:
            raise UserError(f"model.token_dim is {ar['token_dim']} but the data's keyframe tokens have {mean.shape[-1]} dimensions")
        if a.init_from is not None:
            model = ARModel.from_pretrained(a.init_from)
        elif a.backbone is not None or a.backbone_component is not None:
            folder = a.backbone
            if folder is None:
                profile, key = a.backbone_component.split(".")
                folder = Profile.load(profile).path(key)
            model = ARModel.from_backbone(folder, DTYPES[a.backbone_dtype], **ar)
        else:
            # transformers is heavy: loaded only on the paths that read HF folders
            from transformers import LlamaConfig

            llama = LlamaConfig(vocab_size=len(self.text_tokenizer), hidden_size=a.hidden_size, intermediate_size=a.intermediate_size or 4 * a.hidden_size,
                                num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads or a.heads,
                                max_position_embeddings=a.max_position_embeddings, rope_theta=a.rope_theta, attention_dropout=a.attention_dropout,
                                tie_word_embeddings=False, pad_token_id=None)
            model = ARModel(ARConfig(llama=llama.to_dict(), **ar))
        if model.backbone.config.vocab_size < len(self.text_tokenizer):
            raise UserError(f"the backbone's vocabulary ({model.backbone.config.vocab_size}) is smaller than the text tokenizer's ({len(self.text_tokenizer)})")
        with torch.no_grad():
            model.token_mean.copy_(mean)
            model.token_std.copy_(std)
        if self.opts.gradient_checkpointing:
            bb = model.backbone
            (getattr(bb, "activation_checkpointing_enable", None) or bb.gradient_checkpointing_enable)()
        return model

    # --- data -----------------------------------------------------------------------------------------------
    def samples(self, episode: dict, rng) -> list:
        """One episode → its training sequences (embed.Part), augmented with draws from `rng`."""
        return self.sequences(episode, **self.draw(episode, rng))

    def draw(self, episode: dict, rng) -> dict:
        """The episode's random augmentations: flip, reversal, which faces, which reference frames."""
        o = self.opts
        n_shots = sum(len(sc.shots) for sc in self.story(episode).scenes)
        flip = o.hflip and bool(rng.random() < 0.5)
        reverse = o.reverse and bool(rng.random() < 0.5)
        faces = pick_faces(self.face_embeddings(episode), rng, o.random_face, o.face_drop)
        refs, restyle = None, None
        if o.references and rng.random() < o.references_p:
            refs = pick_references(n_shots, o.references, rng, episode.get("clips"))
            if o.restyle_p and rng.random() < o.restyle_p:
                restyle = draw_restyle(self.story(episode), rng)
        hide = bool(refs) and bool(o.history_hide_p) and bool(rng.random() < o.history_hide_p)
        character = None
        if o.character_references and rng.random() < o.character_references_p:
            params, _ = self.restyler.shot_params(episode)
            character = draw_character_references(self.story(episode), params, rng, o.character_references, o.character_modes)
            restyle = None if character is not None else restyle  # one look override per sequence
        return {"flip": flip, "reverse": reverse, "faces": faces, "refs": refs, "restyle": restyle, "hide_history": hide, "character": character}

    @cached_property
    def restyler(self):
        return Restyler(lambda i: self.index.path(i, ".yaml"), self.tokens)

    def sequences(self, episode: dict, flip: bool = False, reverse: bool = False, faces: dict | None = None, refs=None, restyle=None,
                  hide_history: bool = False, character=None) -> list:
        """restyle: (character id, clothes colour) re-renders the keyframes and references with that look;
        hide_history: the sequences' earlier keyframe tokens are hidden from later shots (the model's forward);
        character: an ar_references.CharacterReferenceDraw — that character's portraits in its sheet entry (and, by its
        mode, restyled keyframes or a vague description)."""
        o = self.opts
        story = self.story(episode)
        if character is not None:
            story = with_description(story, character.story_id, character.description(story.character(character.story_id).description))
            if character.mode == "restyle":
                restyle = character.looks
        sheet, scripts = encode_script(story, self.text_tokenizer, self.descriptor, faces=faces or {}, flip=flip and o.hflip_swap_words)
        if character is not None:
            entry = next(c for c in sheet.characters if c.id == character.story_id)
            h, w = episode["keyframes"].shape[1:3]
            self.tokens.encoded += len(character.portraits)
            entry.references = encode_frames(self.tokens.tokenizer, portrait_frames(character, (w, h), self.restyler.shot_params(episode)[1]), flip)
        from_clips = o.references_from == "clips"
        if restyle is not None and (refs or character is not None):
            tokens = self.restyler.keyframe_tokens(episode, restyle, flip)
            ref_tokens = self.restyler.reference_tokens(episode, restyle, refs, flip, tokens, from_clips) if refs else None
        else:
            tokens = self.tokens.keyframes(episode, flip)
            ref_tokens = self.tokens.frames(episode, refs, flip, from_clips) if refs else None
        if len(tokens) != len(scripts):
            raise UserError(f"episode {episode['meta']['id']}: {len(scripts)} shots in its script but {len(tokens)} keyframes")
        order = episode_order(len(scripts), reverse)
        parts = [build_sequence(sheet, [scripts[i] for i in order[s : s + o.max_shots]], tokens[order[s : s + o.max_shots]], ref_tokens)
                 for s in range(0, len(order), o.max_shots)]
        for part in parts:
            part.hide_history = hide_history
        return parts

    def collate(self, samples: list, device, dtype):
        return {"parts": samples, "token_mask": self.opts.token_mask}

    def loss(self, model, batch):
        raw, targets = model(batch)
        module = getattr(model, "module", model)  # the DeepSpeed engine wraps the ARModel
        o = self.opts
        return gmm_loss(module.head.params(raw), targets, o.nll_weight, o.l1_weight, o.l2_weight)

    def export(self, model, out_dir: Path, stream) -> dict:
        model.float().eval().save_pretrained(out_dir, None if self.opts.export_dtype == "float32" else DTYPES[self.opts.export_dtype])
        figures = {"params": sum(p.numel() for p in model.parameters()), "token_dim": model.config.token_dim,
                   "window_shots": model.config.window_shots}
        if self.opts.eval_sequences:
            parts = stream.take(self.opts.eval_sequences)
            raw, targets = model({"parts": parts})
            _, m = gmm_loss(model.head.params(raw), targets)
            figures.update({f"eval_{k}": v for k, v in m.items()})
        return figures


STAGE = ARStage
