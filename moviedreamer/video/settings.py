"""The anchored I2V model's sampling defaults and the latent convention it was trained with, saved beside its
weights as moviedreamer_i2v.json (video/model.py) and overridable per call (video/sampler.py `with_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from moviedreamer.errors import UserError


@dataclass
class I2VSettings:
    """How the model is sampled by default, and the latent convention it was trained with."""

    num_frames: int = 8  # frames per segment (the length it was trained on)
    overlap: int = 2  # frames a segment shares with the previous one (>= 1)
    steps: int = 8  # sampler steps
    tau: int = 4  # the end-frame instruction is used in the first tau of `steps` steps (tau >= steps: all)
    guidance_min: float = 1.0  # classifier-free guidance, linear over the frames (SVD); 1.0 = off (one UNet pass)
    guidance_max: float = 1.0
    guidance_segments: int = 0  # only the first k segments of a shot are guided (0: all); later ones run one UNet pass
    action_guidance: float | None = None  # in guided segments, scale of (all - without the descriptor token): 3 UNet rows; None = plain CFG
    fps: int = 8
    motion_bucket: float = 32.0  # default "motion amount" time id (training data's median unless set)
    motion_scale: float = 2048.0  # bucket = motion_scale * mean |optical flow| / frame width, clamped to [0, 255]
    noise_aug: float = 0.05  # conditioning-latent noise augmentation at inference (a time id too)
    noise_share: float = 0.0  # initial noise of every frame = sqrt(r) * one shared draw + sqrt(1 - r) * its own (r in [0, 1))
    decode_chunk: int = 8  # frames per VAE decode call
    candidates: int = 1  # samples per segment, the one keeping the keyframe's faces best kept (rerank/segments.py); 1 = off
    candidate_segments: int = 1  # ... in a shot's first k segments only (0: all)
    accept: float = 0.9  # a candidate whose frames score this (mean identity score) is kept without trying more
    motion_weight: float = 0.0  # with a motion prior: candidate score - w * |ln(measured / expected motion)| (0: faces only)
    presence_weight: float = 0.0  # with the profile's presence probe: + w * the frames' mean presence term (0: off)
    presence_floor: float = -5.0  # the probe's log p(exact characters) is clipped here and divided by |floor|
    fast_motion: float | None = None  # with a motion prior: shots expected to move >= this (px/frame at the prior's width) ...
    fast_noise_share: float = 0.0  # ... sample with this noise_share instead (fast_motion null: never)
    start_sigma: float | None = None  # start each segment from its conditioning frame noised to this sigma (the schedule's steps below it), not from pure noise
    motion_field_sigma: float | None = None  # with the model's motion field (video/motion_field.py): each segment starts from the keyframe warped along the field's maps, noised to this sigma (0: the warped frames as they are; null: the field is not used)
    motion_field_visibility: bool = True  # the field's visibility marks what the warp cannot show (drawn by the clip model above motion_field_sigma 0, inpainted at 0); false: the warp shows every pixel (a pixel that was hidden shows what hid it)
    pin_keyframe: bool = True  # frame 0 of the first segment is the keyframe's latent
    latent_channels: int = 4
    flow_channels: int = 0  # VAE latents of the flow picture the UNet denoises with the appearance (VideoJAM, video/motion.py)
    flow_max: float = 0.03  # the flow picture's full saturation, in frame widths per frame
    inner_guidance: float = 0.0  # VideoJAM's Inner-Guidance weight w (flow channels only): one more UNet row, the flow input zeroed
    inner_guidance_share: float = 0.5  # ... in this first share of the steps
    clone_weight: float = 0.1  # MotionClone (video/motion_clone.py), shots with a motion reference: guidance step in noise units (0: off)
    clone_share: float = 0.5  # ... in this first share of the steps
    clone_sigma: float = 2.0  # ... the noise level the reference's temporal attention is read at
    clone_top_k: int = 1  # ... dominant entries kept per (position, head, query frame)
    clone_mode: str = "one-step"  # ... "one-step" (noised once) or "inversion" (the sampler's ODE run backwards)
    clone_background: float = 0.3  # ... weight of positions outside the shot's rough foreground
    anchor_latent: bool = False  # the UNet also takes the keyframe's latents on every frame of every segment (long shots keep it)
    distilled_steps: int = 0  # the teacher's steps this model was distilled from (train/stages/i2v_distill.py); 0: not distilled
    residual: bool = False  # the UNet denoises each frame's difference from the segment's conditioning frame, not the frame (trained so)
    vae_scaling_factor: float = 1.0  # of the VAE it was trained with (checked when loading)
    descriptor_template: str = "{action}. {camera}"
    image_encoder: dict = field(default_factory=dict)  # {"path", "format"} of the anchor's vision encoder it was trained with (path relative to the folder)
    descriptor_encoder: dict = field(default_factory=dict)  # {"path", "format"} of the text encoder of its descriptor token, likewise ({}: the profile's)

    @classmethod
    def from_dict(cls, data: dict) -> "I2VSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def reranks(self, segment: int) -> bool:
        """Whether a shot's segment `segment` (0-based) is the best of several samples."""
        return self.candidates > 1 and (not self.candidate_segments or segment < self.candidate_segments)

    def guides(self, segment: int) -> bool:
        """Whether a shot's segment `segment` (0-based) samples with classifier-free guidance."""
        return (self.guidance_min > 1.0 or self.guidance_max > 1.0) and (not self.guidance_segments or segment < self.guidance_segments)

    def check(self) -> "I2VSettings":
        if self.num_frames < 2:
            raise UserError(f"i2v settings: num_frames must be at least 2, found {self.num_frames}")
        if not 1 <= self.overlap < self.num_frames:
            raise UserError(f"i2v settings: overlap must be in [1, num_frames - 1] = [1, {self.num_frames - 1}], found {self.overlap}")
        if self.steps < 1 or self.tau < 0:
            raise UserError(f"i2v settings: expected steps >= 1 and tau >= 0 (tau >= steps: every step), found steps={self.steps}, tau={self.tau}")
        if not 0.0 <= self.noise_share < 1.0:
            raise UserError(f"i2v settings: noise_share must be in [0, 1), found {self.noise_share}")
        if self.guidance_segments < 0:
            raise UserError(f"i2v settings: guidance_segments must be >= 0 (0: every segment), found {self.guidance_segments}")
        if self.candidates < 1 or self.candidate_segments < 0:
            raise UserError(f"i2v settings: expected candidates >= 1 and candidate_segments >= 0, found {self.candidates}, {self.candidate_segments}")
        if not 0.0 <= self.accept <= 1.0:
            raise UserError(f"i2v settings: accept must be in [0, 1] (a mean identity score), found {self.accept}")
        if self.presence_weight < 0 or self.presence_floor >= 0:
            raise UserError(f"i2v settings: expected presence_weight >= 0 and presence_floor < 0, found {self.presence_weight}, {self.presence_floor}")
        if not 0.0 <= self.fast_noise_share < 1.0 or self.motion_weight < 0 or (self.fast_motion is not None and self.fast_motion < 0):
            raise UserError(f"i2v settings: expected fast_noise_share in [0, 1), motion_weight >= 0 and fast_motion >= 0 or null, found "
                            f"{self.fast_noise_share}, {self.motion_weight}, {self.fast_motion}")
        if self.flow_channels < 0 or self.flow_max <= 0 or self.inner_guidance < 0 or not 0 <= self.inner_guidance_share <= 1:
            raise UserError(f"i2v settings: expected flow_channels >= 0, flow_max > 0, inner_guidance >= 0 and inner_guidance_share in [0, 1], "
                            f"found {self.flow_channels}, {self.flow_max}, {self.inner_guidance}, {self.inner_guidance_share}")
        if self.clone_weight < 0 or not 0 <= self.clone_share <= 1 or self.clone_sigma <= 0 or self.clone_top_k < 1 \
                or self.clone_mode not in ("one-step", "inversion") or not 0 <= self.clone_background <= 1:
            raise UserError(f"i2v settings: expected clone_weight >= 0, clone_share in [0, 1], clone_sigma > 0, clone_top_k >= 1, clone_mode "
                            f"'one-step' or 'inversion' and clone_background in [0, 1], found {self.clone_weight}, {self.clone_share}, "
                            f"{self.clone_sigma}, {self.clone_top_k}, {self.clone_mode!r}, {self.clone_background}")
        if self.motion_field_sigma is not None and self.motion_field_sigma < 0:
            raise UserError(f"i2v settings: motion_field_sigma must be >= 0 or null (no motion field), found {self.motion_field_sigma}")
        if self.start_sigma is not None and self.start_sigma <= 0:
            raise UserError(f"i2v settings: start_sigma must be > 0 or null (pure noise), found {self.start_sigma}")
        if self.decode_chunk < 1:
            raise UserError(f"i2v settings: decode_chunk must be >= 1, found {self.decode_chunk}")
        if self.action_guidance is not None and self.action_guidance < 0:
            raise UserError(f"i2v settings: action_guidance must be >= 0 or null (plain guidance), found {self.action_guidance}")
        return self
