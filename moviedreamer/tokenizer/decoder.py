"""The diffusion decoder: keyframe tokens (+ the shot's descriptor and face embeddings) → a keyframe, in VAE latent space.

A diffusers `UNet2DConditionModel` with SDXL's `addition_embed_type="text_time"`, plus the projections added here:

    tokens      [B, n, d]   ─► MLP ─► n × token_expand cross-attention tokens   ┐
    descriptors [B, Nd, Dd] ─► Linear ─► one token per descriptor slot          ├─► encoder_hidden_states [B, L, C]
    faces       [B, Nf, Df] ─► Linear ─► one token per face slot                ┘   (C = the UNet's cross_attention_dim)
    tokens (flattened)      ─► Linear ─► SDXL's pooled "text_embeds"; time_ids = (H, W, 0, 0, H, W) as in SDXL

Every slot has a learned position embedding; a slot that is absent (padding) or masked holds its type's learned null
embedding instead of a projection. With `slot_structure`, a slot that does not exist (padding beyond the shot's
descriptors / characters) holds a second null, "absent", distinct from "masked", and the number of face slots (one per
character of the shot) is embedded into the pooled vector: masking in training then no longer hides how many
characters a shot has (without it, a 3-character shot with one slot masked reads like a 2-character shot). Masking draws (training) are `draw_keep`: per-sample token masking, per-slot
descriptor and face masking, and a whole-row "unconditional" rate, the null condition classifier-free guidance
uses at inference (all slots null). `token_expand` exists because cross-attention over only 2 keys can only blend 2
value vectors per head; expanding each token into several keys gives the UNet room to read them.

Sampling: DPM-Solver++ (default) or DDIM over the training noise schedule, few steps, CFG when guidance > 1.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from moviedreamer.errors import CheckpointError, UserError

logger = logging.getLogger(__name__)

SAMPLERS = ("dpmsolver++", "ddim")
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "timestep_spacing", "steps_offset")
# SDXL's noise schedule; "trailing" spacing reaches the noisiest timestep even with few sampling steps.
DEFAULT_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "prediction_type": "epsilon", "timestep_spacing": "trailing", "steps_offset": 0}


@dataclass
class DecoderConfig:
    token_dim: int = 64
    n_tokens: int = 2
    descriptor_dim: int = 128
    face_dim: int = 128
    max_descriptors: int = 8
    max_faces: int = 4
    token_expand: int = 4
    schedule: dict = field(default_factory=lambda: dict(DEFAULT_SCHEDULE))
    sampler: str = "dpmsolver++"
    steps: int = 12
    guidance: float = 2.0
    id_guidance: float | None = None  # scale of (all inputs - tokens only); None: = guidance (plain CFG, 2 passes)
    slot_structure: bool = False  # absent slots != masked slots, and the character count in the pooled vector
    candidates: int = 1  # keyframes the renderer decodes per shot at most, keeping the best face match (rerank.py); 1 = off
    accept: float = 0.95  # a candidate whose identity score reaches this is kept without trying more
    look_weight: float = 0.0  # weight of the body-vs-description check in the identity score (look.py); 0 = faces only
    look_temperature: float = 20.0  # softmax temperature of that check over the story's cast
    token_weight: float = 0.0  # weight of (1 - cosine of a candidate's re-encoded tokens to its tokens) in the score; 0 = off
    presence_weight: float = 0.0  # weight of the presence probe's term (encoders/presence.py) in the score; 0 = off
    presence_floor: float = -5.0  # its log p(exact characters) is clipped here and divided by |floor|
    reference_prompts: bool = False  # trained to read a character's reference frames in its descriptor slot (tokenizer/references.py)

    @classmethod
    def from_dict(cls, data: dict) -> "DecoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"decoder config: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**data).check()

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> "DecoderConfig":
        for name in ("token_dim", "n_tokens", "descriptor_dim", "face_dim", "token_expand", "steps", "candidates"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"decoder config: {name} must be >= 1, found {getattr(self, name)}")
        if self.max_descriptors < 0 or self.max_faces < 0:
            raise UserError("decoder config: max_descriptors and max_faces must be >= 0")
        if self.sampler not in SAMPLERS:
            raise UserError(f"decoder config: sampler must be one of {SAMPLERS}, found {self.sampler!r}")
        bad = sorted(set(self.schedule) - set(SCHEDULE_KEYS))
        if bad:
            raise UserError(f"decoder config: unknown schedule keys {bad}; expected some of {list(SCHEDULE_KEYS)}")
        self.schedule = {**DEFAULT_SCHEDULE, **self.schedule}
        if self.schedule["prediction_type"] not in ("epsilon", "v_prediction"):
            raise UserError(f"decoder config: schedule.prediction_type must be epsilon or v_prediction, found {self.schedule['prediction_type']!r}")
        if self.guidance < 1.0:
            raise UserError(f"decoder config: guidance must be >= 1 (1 = no classifier-free guidance), found {self.guidance}")
        if self.token_weight < 0:
            raise UserError(f"decoder config: token_weight must be >= 0, found {self.token_weight}")
        if self.presence_weight < 0 or self.presence_floor >= 0:
            raise UserError(f"decoder config: presence_weight must be >= 0 and presence_floor < 0, found {self.presence_weight}, {self.presence_floor}")
        if self.look_weight < 0 or self.look_temperature <= 0:
            raise UserError(f"decoder config: look_weight must be >= 0 and look_temperature > 0, found {self.look_weight}, {self.look_temperature}")
        if not 0.0 <= self.accept <= 1.0:
            raise UserError(f"decoder config: accept must be in [0, 1] (a mean face cosine), found {self.accept}")
        if self.id_guidance is not None and self.id_guidance < 0:
            raise UserError(f"decoder config: id_guidance must be >= 0 or null (= guidance), found {self.id_guidance}")
        return self


@dataclass
class MaskRates:
    """Training-time masking: `tokens` per sample, `descriptors`/`faces` per slot, `uncond` whole rows (CFG)."""

    tokens: float = 0.1
    descriptors: float = 0.3
    faces: float = 0.3
    uncond: float = 0.1

    def check(self) -> "MaskRates":
        for k, v in asdict(self).items():
            if not 0.0 <= v <= 1.0:
                raise UserError(f"mask rate {k} must be in [0, 1], found {v}")
        return self


def draw_keep(batch: int, n_desc: int, n_face: int, rates: MaskRates, generator: torch.Generator | None = None):
    """(keep_tokens [B], keep_desc [B, Nd], keep_face [B, Nf]) booleans: True = the input is shown to the decoder."""
    rand = lambda *shape: torch.rand(shape, generator=generator)  # noqa: E731
    uncond = rand(batch) < rates.uncond
    keep_tokens = (rand(batch) >= rates.tokens) & ~uncond
    keep_desc = (rand(batch, n_desc) >= rates.descriptors) & ~uncond[:, None]
    keep_face = (rand(batch, n_face) >= rates.faces) & ~uncond[:, None]
    return keep_tokens, keep_desc, keep_face


def pad_slots(items, max_n: int, dim: int, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A list of [Ni, dim] tensors (or one [B, N, dim] tensor, or None entries) → ([B, max_n, dim], present [B, max_n],
    given [B, max_n]). Slots keep their order (slot k of every row has the same role); all-zero rows and padding are
    not present; `given` is every slot of the Ni rows (a character without a face is given but not present)."""
    if isinstance(items, torch.Tensor):
        if items.dim() != 3:
            raise UserError(f"{what}: expected [B, N, {dim}], found {list(items.shape)}")
        items = list(items)
    out = torch.zeros(len(items), max_n, dim)
    present = torch.zeros(len(items), max_n, dtype=torch.bool)
    given = torch.zeros(len(items), max_n, dtype=torch.bool)
    for i, x in enumerate(items):
        if x is None or x.numel() == 0:
            continue
        x = torch.as_tensor(x).float().reshape(-1, x.shape[-1])
        if x.shape[-1] != dim:
            raise UserError(f"{what}: embeddings of width {x.shape[-1]}, the decoder was trained with {dim}")
        if len(x) > max_n:
            logger.warning("%s: %d given, the decoder has %d slots: the first %d are used", what, len(x), max_n, max_n)
            x = x[:max_n]
        out[i, : len(x)] = x
        present[i, : len(x)] = x.abs().sum(-1) > 0  # an all-zero row is an absent slot (e.g. a character without a face)
        given[i, : len(x)] = True
    return out, present, given


def time_ids(height: int, width: int, batch: int) -> torch.Tensor:
    """SDXL micro-conditioning: original size, crop top-left, target size (pixels)."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).repeat(batch, 1)


def unet_dims(unet) -> tuple[int, int]:
    """(cross_attention_dim, pooled text_embeds width) of a text_time UNet, with clear errors for other UNets."""
    cfg = unet.config
    if cfg.addition_embed_type != "text_time":
        raise UserError(f"keyframe decoder: expected an SDXL-style UNet2DConditionModel (addition_embed_type 'text_time'), "
                        f"found addition_embed_type {cfg.addition_embed_type!r}")
    cross = cfg.cross_attention_dim
    if isinstance(cross, (list, tuple)):
        if len(set(cross)) != 1:
            raise UserError(f"keyframe decoder: the UNet's cross_attention_dim must be one width, found {list(cross)}")
        cross = cross[0]
    if cfg.in_channels != cfg.out_channels:
        raise UserError(f"keyframe decoder: the UNet must map latents to latents (in_channels == out_channels), found {cfg.in_channels} and {cfg.out_channels}")
    pooled = int(cfg.projection_class_embeddings_input_dim) - 6 * int(cfg.addition_time_embed_dim)
    if pooled < 1:
        raise UserError(f"keyframe decoder: projection_class_embeddings_input_dim ({cfg.projection_class_embeddings_input_dim}) must exceed "
                        f"6 x addition_time_embed_dim ({6 * cfg.addition_time_embed_dim}): the rest is the pooled embedding")
    return int(cross), pooled


def build_unet(args: dict, latent_channels: int, latent_size: int, pooled_dim: int):
    """A fresh SDXL-style UNet from diffusers arguments; text_time and its input width are filled in."""
    # diffusers is heavy: loaded only when a model is built or read
    from diffusers import UNet2DConditionModel

    args = {"sample_size": latent_size, "in_channels": latent_channels, "out_channels": latent_channels,
            "addition_embed_type": "text_time", "addition_time_embed_dim": 16, **args}
    args.setdefault("projection_class_embeddings_input_dim", pooled_dim + 6 * int(args["addition_time_embed_dim"]))
    try:
        unet = UNet2DConditionModel(**args)
    except (TypeError, ValueError) as e:
        raise UserError(f"keyframe decoder: diffusers cannot build this UNet2DConditionModel ({e})") from None
    unet_dims(unet)
    return unet


def load_unet_folder(path) -> "object":
    """A diffusers UNet2DConditionModel folder (SDXL base `unet/`), with errors naming what is missing."""
    # diffusers is heavy: loaded only when a model is built or read
    from diffusers import UNet2DConditionModel

    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected an SDXL UNet folder (config.json + diffusion_pytorch_model.safetensors), found "
                              + ("a file" if path.exists() else "no such folder"))
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path / 'config.json'}: expected the UNet's diffusers config, found no such file")
    if not any((path / n).is_file() for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")):
        raise CheckpointError(f"{path / 'diffusion_pytorch_model.safetensors'}: expected the UNet's weights, found no such file")
    try:
        unet = UNet2DConditionModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: could not load a UNet2DConditionModel ({str(e).splitlines()[0][:300]})") from None
    unet_dims(unet)
    return unet


class KeyframeDecoder(nn.Module):
    """UNet + conditioning projections. `context(...)` builds the cross-attention tokens; `forward` predicts the noise
    (or v); `sample(...)` runs the sampler in latent space."""

    def __init__(self, config: DecoderConfig, unet):
        super().__init__()
        c = self.config = config.check()
        self.unet = unet
        cross, pooled = unet_dims(unet)
        self.cross_dim, self.pooled_dim = cross, pooled
        self.token_proj = nn.Sequential(nn.Linear(c.token_dim, cross), nn.GELU(), nn.Linear(cross, c.token_expand * cross))
        self.pooled_proj = nn.Linear(c.n_tokens * c.token_dim, pooled)
        self.desc_proj = nn.Linear(c.descriptor_dim, cross)
        self.face_proj = nn.Linear(c.face_dim, cross)
        n_tok = c.n_tokens * c.token_expand
        self.slot_pos = nn.Parameter(torch.randn(n_tok + c.max_descriptors + c.max_faces, cross) * 0.02)
        self.null = nn.ParameterDict({k: nn.Parameter(torch.randn(cross) * 0.02) for k in ("token", "descriptor", "face")})
        self.null_pooled = nn.Parameter(torch.zeros(pooled))
        if c.slot_structure:
            self.absent = nn.ParameterDict({k: nn.Parameter(torch.randn(cross) * 0.02) for k in ("descriptor", "face")})
            self.count_embed = nn.Embedding(c.max_faces + 1, pooled)  # 0..max_faces face slots given
            nn.init.zeros_(self.count_embed.weight)

    @property
    def context_length(self) -> int:
        c = self.config
        return c.n_tokens * c.token_expand + c.max_descriptors + c.max_faces

    def context(self, tokens, descriptors, desc_present, faces, face_present, keep_tokens=None, desc_given=None, face_given=None):
        """→ (encoder_hidden_states [B, L, C], pooled [B, P]). `tokens` [B, n, d] or None (all null); `*_present` are
        the slots shown (False: null); `keep_tokens` [B] bool masks the keyframe tokens per row; `*_given` (used with
        `slot_structure`; None: no slot given) are the slots that exist, shown or masked."""
        c = self.config
        b = descriptors.shape[0]
        dtype = self.desc_proj.weight.dtype
        dev = self.desc_proj.weight.device
        n_tok = c.n_tokens * c.token_expand
        if tokens is None:
            keep_tokens = torch.zeros(b, dtype=torch.bool, device=dev)
            tokens = torch.zeros(b, c.n_tokens, c.token_dim, device=dev, dtype=dtype)
        if tokens.shape[1:] != (c.n_tokens, c.token_dim):
            raise UserError(f"keyframe decoder: expected tokens [B, {c.n_tokens}, {c.token_dim}], found {list(tokens.shape)}")
        tokens = tokens.to(dtype)
        keep_tokens = torch.ones(b, dtype=torch.bool, device=dev) if keep_tokens is None else keep_tokens.to(dev)
        tok = self.token_proj(tokens).reshape(b, n_tok, self.cross_dim)
        tok = torch.where(keep_tokens.view(b, 1, 1), tok, self.null["token"].to(dtype))
        desc_null, face_null = self.null["descriptor"].to(dtype), self.null["face"].to(dtype)
        if c.slot_structure:
            desc_given = torch.zeros_like(desc_present) if desc_given is None else desc_given
            face_given = torch.zeros_like(face_present) if face_given is None else face_given
            desc_null = torch.where(desc_given.to(dev)[..., None], desc_null, self.absent["descriptor"].to(dtype))
            face_null = torch.where(face_given.to(dev)[..., None], face_null, self.absent["face"].to(dtype))
        desc = torch.where(desc_present.to(dev)[..., None], self.desc_proj(descriptors.to(dev, dtype)), desc_null)
        face = torch.where(face_present.to(dev)[..., None], self.face_proj(faces.to(dev, dtype)), face_null)
        hidden = torch.cat([tok, desc, face], dim=1) + self.slot_pos.to(dtype)
        pooled = torch.where(keep_tokens.view(b, 1), self.pooled_proj(tokens.flatten(1)), self.null_pooled.to(dtype))
        if c.slot_structure:
            pooled = pooled + self.count_embed(face_given.to(dev).sum(1)).to(dtype)
        return hidden, pooled

    def forward(self, noisy, timesteps, hidden, pooled, ids):
        return self.unet(noisy, timesteps, encoder_hidden_states=hidden, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample

    # ------------------------------------------------------------------------------------------------ sampling

    def make_scheduler(self, sampler: str | None = None):
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        name = sampler or self.config.sampler
        if name not in SAMPLERS:
            raise UserError(f"keyframe decoder: sampler must be one of {SAMPLERS}, found {name!r}")
        if name == "ddim":
            return DDIMScheduler(**self.config.schedule, clip_sample=False, set_alpha_to_one=False)
        return DPMSolverMultistepScheduler(**self.config.schedule, algorithm_type="dpmsolver++", solver_order=2)

    def training_scheduler(self):
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.config.schedule, clip_sample=False)

    @torch.no_grad()
    def sample(self, hidden, pooled, ids, shape, generators, steps=None, guidance=None, sampler=None, null=None,
               tokens_only=None, id_guidance=None):
        """Latents [B, C, h, w] from conditioning; `null` = (hidden, pooled) of the unconditional branch (CFG when
        guidance > 1). `generators`: one torch.Generator per row (the row's initial noise).

        Two-scale guidance when `id_guidance` (or the config's) differs from `guidance`: with `tokens_only` = the
        condition with descriptors and faces masked, out = u + guidance·(t − u) + id_guidance·(c − t), three passes
        per step (InstructPix2Pix's two-condition CFG); id_guidance = guidance is plain CFG."""
        steps = int(steps or self.config.steps)
        guidance = float(self.config.guidance if guidance is None else guidance)
        id_guidance = self.config.id_guidance if id_guidance is None else id_guidance
        id_guidance = guidance if id_guidance is None else float(id_guidance)
        if steps < 1:
            raise UserError(f"keyframe decoder: steps must be >= 1, found {steps}")
        if guidance < 1:
            raise UserError(f"keyframe decoder: guidance must be >= 1 (1 = off), found {guidance}")
        dev, dtype = hidden.device, hidden.dtype
        sched = self.make_scheduler(sampler)
        with warnings.catch_warnings():  # diffusers' own numpy-2 deprecation notice, nothing to act on here
            warnings.simplefilter("ignore", DeprecationWarning)
            sched.set_timesteps(steps, device=dev)
        x = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(dev, torch.float32) * sched.init_noise_sigma
        use_null, use_tokens = guidance > 1.0, id_guidance != guidance
        if use_tokens and tokens_only is None:
            raise UserError("keyframe decoder: id_guidance needs the tokens-only conditioning")
        if use_null and null is None:
            raise UserError("keyframe decoder: guidance needs the unconditional (null) conditioning")
        # rows: [null], [tokens only], all; with guidance 1 the null row has weight 0 (u + 1·(t − u) = t): not run
        branches = ([null] if use_null else []) + ([tokens_only] if use_tokens else []) + [(hidden, pooled)]
        n = len(branches)
        hidden, pooled = torch.cat([h for h, _ in branches]), torch.cat([p for _, p in branches])
        ids = torch.cat([ids] * n).to(dev, dtype)
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            rows = self(torch.cat([inp] * n).to(dtype), t.expand(inp.shape[0] * n).to(dev), hidden, pooled, ids).float().chunk(n)
            out = rows[-1]
            if use_tokens:
                tok = rows[-2]
                out = (rows[0] + guidance * (tok - rows[0]) if use_null else tok) + id_guidance * (out - tok)
            elif use_null:
                out = rows[0] + guidance * (out - rows[0])
            x = sched.step(out, t, x).prev_sample
        return x
