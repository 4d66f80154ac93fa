"""Anchored extension (MovieDreamer) with a last-frame instruction (PixelDance), sampled with the model's
diffusers Euler scheduler (EDM sigmas, v-prediction: SVD's), all frames of a segment in one UNet batch.

A shot of N frames is cut into segments of at most `num_frames` frames, each sharing `overlap` frames with the
previous one (plan_segments). For segment n:

    concatenated latent  <- segment 1: the keyframe's latent (VAE-encoded once)
                            segment n: the latent of the previous segment's last kept frame (its frame that
                            segment n starts on; with overlap 1, literally its last frame) - the latent itself,
                            never decoded and re-encoded, so colours do not drift through VAE round trips
    cross-attention      <- ALWAYS the keyframe's CLIP image embedding (+ the shot's descriptor): the anchor
    overlap frames       <- during denoising, the first `overlap` frames are pulled towards the previous segment's
                            (re-noised) latents, weight 1 - j/overlap for frame j; after it they are cross-faded with
                            the same weights. Frame 0 is thus exactly the previous segment's frame, and the joins
                            carry the motion on instead of restarting it.
    end frame            <- only in the last segment, at its last position, for the first `tau` of `steps` steps.
    candidates           <- with a scorer (rerank/segments.py) and settings.candidates > 1, the best of several
                            samples of a segment is kept (candidates.py; this loop only asks for one).
    motion prior         <- with the model's prior (video/motion_prior.py) and the shot's text: a shot expected to
                            move at least `fast_motion` px/frame samples with `fast_noise_share`.

`anchor="last-frame"` is the baseline for the drift measurement: segment n attends to the CLIP embedding of the
frame it starts from instead of the keyframe's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.errors import UserError
from moviedreamer.video.candidates import SegmentPicker, plain
from moviedreamer.video.guidance import Guidance
from moviedreamer.video.conditioning import (
    ClipCondition,
    as_condition,
    augment,
    check_size,
    concat_latents,
    decode_latents,
    descriptor_inputs,
    encode_latents,
    to_pixels,
    to_uint8,
)
from moviedreamer.video.model import AnchoredI2V, I2VSettings, time_ids
from moviedreamer.video.motion_clone import MotionCloner
from moviedreamer.video.motion_field import segment_frames
from moviedreamer.video.work import SegmentWork, WorkMeter, plan_segments, shot_work, step_units


def blend_weights(k: int) -> torch.Tensor:
    """Weight of the previous segment on the k shared frames: 1, 1 - 1/k, ..., 1/k."""
    return 1.0 - torch.arange(k, dtype=torch.float32) / k


def sub_seed(seed: int, *parts: int) -> int:
    h = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def _gen(seed: int, *parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(sub_seed(seed, *parts))


@dataclass
class SegmentRecord:
    """What a segment was sampled from and what it gave (returned by `AnchoredSampler.latents(record=...)`)."""

    start: int
    length: int
    raw: torch.Tensor  # [L, C, h, w] scaled latents as sampled, before the overlap cross-fade
    final: torch.Tensor  # [L, C, h, w] after it (its lookahead frames are faded into the next segment)
    known: int  # leading frames tied to the previous segment (or the keyframe)
    pixels: torch.Tensor | None = None  # [L, 3, H, W] in [-1, 1]: the keyframe warped along the motion field (video/motion_field.py)
    seen: torch.Tensor | None = None  # [L, H, W]: how surely each of those pixels was in view in the keyframe


class AnchoredSampler:
    """Samples shots from an AnchoredI2V with a VAE and a vision encoder (and optionally a descriptor encoder)."""

    def __init__(self, model: AnchoredI2V, vae, vision, descriptor=None, device="cpu", settings: I2VSettings | None = None,
                 scorer=None, clone_cache: str | Path | None = None):
        self.model, self.vae, self.vision, self.descriptor = model.eval(), vae, vision, descriptor
        self.clone_cache, self._cloner = clone_cache, None  # motion references' maps (video/motion_clone.py), by file content
        self.weights_fingerprint = ""  # of the weight files, when the pipeline knows it (I2VClipRenderer): part of those maps' key
        self.last_flow = None  # the flow latents [L, m, h, w] the last sampled segment predicted (joint models)
        self.scorer = scorer  # a rerank.SegmentScorer: best-of-N segments when settings.candidates > 1 (candidates.py)
        self.device = torch.device(device)
        self.settings = (settings or model.settings).check()
        self.scheduler = model.make_scheduler()
        if vae.config.latent_channels != model.latent_channels:
            raise UserError(f"i2v: the VAE has {vae.config.latent_channels} latent channels, the video model {model.latent_channels}; "
                            f"use the VAE the model was trained with")
        want = model.conditioning.config.image_embed_dim
        if getattr(vision, "embed_dim", want) != want:
            raise UserError(f"i2v: the vision encoder gives {vision.embed_dim}-wide image embeddings, the video model was trained on {want}; "
                            f"use the vision encoder it was trained with")
        sf = float(vae.config.scaling_factor)
        if abs(sf - model.settings.vae_scaling_factor) > 1e-3 * max(1.0, abs(sf)) and model.settings.vae_scaling_factor != 1.0:
            raise UserError(f"i2v: the VAE's scaling_factor is {sf:.6g}, the video model was trained with {model.settings.vae_scaling_factor:.6g}; "
                            f"use the VAE the model was trained with")

    # ------------------------------------------------------------------------------------------------ pieces

    def with_settings(self, **overrides) -> I2VSettings:
        known = set(I2VSettings.__dataclass_fields__)
        bad = sorted(set(overrides) - known)
        if bad:
            raise UserError(f"i2v: unknown sampler setting(s) {', '.join(bad)}; expected some of {', '.join(sorted(known))}")
        return replace(self.settings, **{k: v for k, v in overrides.items() if v is not None}).check()

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> the CLIP pooled embedding [B, D]."""
        pooled, _ = self.vision.encode_image(((pixels.float() + 1) / 2).clamp(0, 1))
        return pooled

    def descriptor_embedding(self, cond: ClipCondition) -> torch.Tensor | None:
        if self.model.conditioning.descriptor_proj is None:
            return None
        k = self.model.conditioning.descriptor_words
        if cond.descriptor is not None:  # [D] / [1, D] (no words), or [1 + K, D] (pooled, then the words)
            d = torch.as_tensor(np.asarray(cond.descriptor) if isinstance(cond.descriptor, np.ndarray) else cond.descriptor).float()
            return d.reshape(1, -1, d.shape[-1]) if k and d.dim() >= 2 and d.shape[-2] > 1 else d.reshape(1, -1)
        if cond.text:
            if self.descriptor is None:
                raise UserError("i2v: the shot's descriptor is text but no descriptor encoder was given to the clip renderer")
            return descriptor_inputs(self.descriptor, [cond.text], k)
        return None

    def motion_field(self, s: I2VSettings):
        """The model's motion field when the settings use it (`motion_field_sigma`), else None."""
        if s.motion_field_sigma is None:
            return None
        if self.model.motion_field is None:
            raise UserError("i2v settings: motion_field_sigma needs a clip model with a motion field (moviedreamer train motion-field --export MODEL)")
        return self.model.motion_field

    def skipped_steps(self, s: I2VSettings) -> int:
        """Steps of the schedule a segment skips: with the motion field, all of them at `motion_field_sigma` 0 (the warp
        as it is) and none above (what the warp cannot show is drawn from pure noise); else those above `start_sigma`
        (0 without one)."""
        if self.motion_field(s) is not None:
            return s.steps if s.motion_field_sigma == 0 else 0
        sigma = s.start_sigma
        if sigma is None:
            return 0
        sched = self.model.make_scheduler()
        sched.set_timesteps(s.steps)
        return min(int((sched.sigmas[:-1] > sigma).sum()), s.steps - 1)

    def cloner(self) -> MotionCloner:
        """The MotionClone reader/guide on this sampler's model (made once)."""
        if self._cloner is None:
            self._cloner = MotionCloner(self, self.clone_cache)
        return self._cloner

    def expected_motion(self, cond: ClipCondition, s: I2VSettings) -> float | None:
        """The motion prior's px/frame (at its width) for the shot's text; None without a prior, a text, or a setting
        that uses it."""
        prior = self.model.motion_prior
        if prior is None or not cond.text or self.descriptor is None or (not s.motion_weight and s.fast_motion is None):
            return None
        return float(prior.predict(prior.text_features(self.descriptor, [cond.text]))[0])

    @torch.no_grad()
    def sample_segment(self, cond: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor, length: int, s: I2VSettings, seed: int,
                       end: torch.Tensor | None = None, tau: int = 0, known: torch.Tensor | None = None,
                       on_step: Callable[[], None] | None = None, anchor: torch.Tensor | None = None, clone: dict | None = None,
                       base: torch.Tensor | None = None, warped: torch.Tensor | None = None, seen: torch.Tensor | None = None) -> torch.Tensor:
        """One segment. cond / end / anchor: unscaled, augmented latents [1, C, h, w] (anchor: the keyframe's, for a
        model with `anchor_latent`); tokens [1, N, D]; ids [1, 3]; known: scaled latents [K, C, h, w] its first K
        frames are tied to; `on_step` is called after each denoising step; `clone`: a motion reference's guidance
        targets (MotionCloner.targets), applied in the first `clone_share` of the steps; base: the conditioning frame's
        clean scaled latents [1, C, h, w], what a residual model's differences are added to (default: cond, scaled, its
        augmentation noise included); warped: the segment's frames warped along the motion field [L, C, h, w] (scaled)
        and seen [L, H, W] where they show what was in view: in the steps above `motion_field_sigma` those pixels are
        pinned to the warp (noised to the step's level, RePaint-like), so the clip model draws the rest around them
        (0: no denoising, the warp as it is). Returns scaled latents [L, C, h, w] as sampled (the caller
        cross-fades the known frames)."""
        dev, dtype = self.device, self.model.dtype
        sched = self.scheduler
        sched.set_timesteps(s.steps, device=dev)
        c, h, w = cond.shape[1:]
        first = self.skipped_steps(s) if warped is not None or s.motion_field_sigma is None else 0
        if warped is not None and first >= s.steps:  # sigma 0: the warped frames as they are (video/motion_field.fill_unseen)
            self.last_flow = None
            return warped.float()
        lat = torch.randn((1, length, c, h, w), generator=_gen(seed, 0))
        if s.noise_share > 0:  # frames start from correlated noise: less frame-to-frame flicker in few steps
            lat = s.noise_share ** 0.5 * torch.randn((1, 1, c, h, w), generator=_gen(seed, 2)) + (1 - s.noise_share) ** 0.5 * lat
        m = self.model.settings.flow_channels
        if m:  # the clip's flow, denoised jointly with the appearance and dropped at the end (video/motion.py)
            lat = torch.cat([lat, torch.randn((1, length, m, h, w), generator=_gen(seed, 4))], dim=2)
        # a residual model's frames are the conditioning frame plus what it denoises (I2VSettings.residual)
        offset = None
        if self.model.settings.residual:  # the clean frame: augmentation noise added to it would stay in every frame and build up
            offset = (base.float() if base is not None else cond.float() * float(self.vae.config.scaling_factor))[:, None].to(dev)
        if first:  # a truncated schedule from the conditioning frame (SDEdit-like): the frames start as it
            sched.set_begin_index(first)
            start = float(sched.sigmas[first])
            base = torch.zeros_like(lat)
            if offset is None:
                base[:, :, :c] = cond.float().cpu()[:, None] * float(self.vae.config.scaling_factor)
            lat = (base + start * lat).to(dev)
        else:  # the whole schedule from pure noise
            lat = (lat * sched.init_noise_sigma).to(dev)
        plain = concat_latents(cond, length).to(dev, dtype)
        with_end = concat_latents(cond, length, end).to(dev, dtype) if end is not None and tau > 0 else plain
        if self.model.settings.anchor_latent:
            if anchor is None:
                raise UserError("i2v: this model takes the keyframe's latents on every frame (anchor_latent); none were given")
            rep = concat_latents(anchor, length).to(dev, dtype)
            plain, with_end = torch.cat([plain, rep], dim=2), torch.cat([with_end, rep], dim=2)
        k_noise = torch.randn(known.shape, generator=_gen(seed, 1)).to(dev) if known is not None else None
        pin = None
        if warped is not None and seen is not None:  # [1, L, 1, h, w]: the latent cells the warp shows
            pin = F.interpolate(seen[:, None].float(), size=(h, w), mode="area").clamp(0, 1)[None].to(dev)
            pin_target = (warped.float()[None].to(dev) - (0 if offset is None else offset))
            pin_noise = torch.randn(pin_target.shape, generator=_gen(seed, 6)).to(dev)
        k_w = blend_weights(len(known)).view(1, -1, 1, 1, 1).to(dev) if known is not None else None
        guide = Guidance(s, length, tokens, ids, dev, m)
        clone_steps = round(s.steps * s.clone_share) if clone is not None and s.clone_weight > 0 else 0
        for i, t in enumerate(sched.timesteps):
            if i < first:
                continue
            if pin is not None and float(sched.sigmas[i]) > s.motion_field_sigma:  # the warp where it sees, noised to this level
                lat[:, :, :c] = pin * (pin_target + sched.sigmas[i].to(dev) * pin_noise) + (1 - pin) * lat[:, :, :c]
            if known is not None:  # pull the shared frames towards the previous segment, noised to this step's level
                sigma = sched.sigmas[i].to(dev)
                target = (known.to(dev) - (0 if offset is None else offset[0].to(dev)) + sigma * k_noise)[None]
                lat[:, : len(known), :c] = (1 - k_w) * lat[:, : len(known), :c] + k_w * target
            x = sched.scale_model_input(lat, t).to(dtype)
            concat = with_end if i < tau else plain
            out = guide.v(self.model, x, concat, t, i)
            if i < clone_steps:  # primary temporal-attention guidance towards the reference's motion
                out = self.cloner().adjust(out, lat, concat, t, float(sched.sigmas[i]), tokens, ids, clone, s.clone_weight)
            lat = sched.step(out, t, lat).prev_sample
            if on_step is not None:
                on_step()
        self.last_flow = lat[0, :, c:].float().cpu() if m else None  # the motion the model drew (scaled flow latents), for diagnostics
        return lat[0, :, :c] if offset is None else lat[0, :, :c] + offset[0].to(lat)

    # ------------------------------------------------------------------------------------------------ shots

    def work(self, n_frames: int, cloned: bool = False, **overrides) -> list[SegmentWork]:
        """The denoising work of a shot of `n_frames` frames (`cloned`: with a motion reference), per segment
        (video/work.py): what `latents` reports to its `progress` meter."""
        s = self.with_settings(**overrides)
        if self.scorer is None:
            s = replace(s, candidates=1)
        return shot_work(s, plan_segments(n_frames, s.num_frames, s.overlap), cloned, self.skipped_steps(s))

    @torch.no_grad()
    def latents(self, keyframe, n_frames: int, condition=None, end_frame=None, seed: int = 0, fps: int | None = None,
                anchor: str = "keyframe", record: list | None = None, progress: WorkMeter | None = None,
                **overrides) -> Iterator[torch.Tensor]:
        """Yields the shot's latents segment by segment ([n_i, C, h, w] scaled, n_1 + n_2 + ... = n_frames), each
        final once yielded. `record` (a list) receives a SegmentRecord per segment; `progress` (a video.work.WorkMeter)
        each denoising step's work and each segment's number of candidates drawn."""
        if anchor not in ("keyframe", "last-frame"):
            raise UserError(f"i2v: anchor must be 'keyframe' or 'last-frame', found {anchor!r}")
        cond = as_condition(condition)
        s = self.with_settings(**overrides)
        fps = int(fps or s.fps)
        noise_aug = float(cond.noise_aug if cond.noise_aug is not None else s.noise_aug)
        motion = float(cond.motion_bucket if cond.motion_bucket is not None else s.motion_bucket)
        dev, dtype = self.device, self.model.dtype
        sf = float(self.vae.config.scaling_factor)

        key_px = to_pixels(keyframe)
        check_size(self.vae, *key_px.shape[-2:])
        key_lat = encode_latents(self.vae, key_px).cpu()  # [1, C, h, w] scaled: encoded once, never again
        end_lat = None
        if end_frame is not None:
            end_px = to_pixels(end_frame)
            if end_px.shape[-2:] != key_px.shape[-2:]:
                raise UserError(f"i2v: the end frame is {end_px.shape[-1]}x{end_px.shape[-2]}, the keyframe {key_px.shape[-1]}x{key_px.shape[-2]}")
            end_lat = augment(encode_latents(self.vae, end_px).cpu() / sf, noise_aug, _gen(seed, 3))
        expected = self.expected_motion(cond, s)
        if expected is not None and s.fast_motion is not None and expected >= s.fast_motion:
            s = replace(s, noise_share=s.fast_noise_share)
        desc = self.descriptor_embedding(cond)
        desc = None if desc is None else desc.to(dev)
        key_tokens = self.model.tokens(self.image_embeds(key_px).to(dev), desc)
        anchor_lat = augment(key_lat / sf, noise_aug, _gen(seed, 5)) if self.model.settings.anchor_latent else None
        ids = time_ids(fps, motion, noise_aug).to(dev, dtype)

        field = self.motion_field(s)
        field_text = field.text_states(self.descriptor, [cond.text or ""]) if field is not None else None
        picker = SegmentPicker(self.scorer, self.vae, self.model.motion_prior) if self.scorer is not None and s.candidates > 1 else None
        choose = picker.for_shot(key_px, cond, s, expected) if picker is not None else plain
        plans = plan_segments(n_frames, s.num_frames, s.overlap)
        cloning = bool(cond.motion_reference) and s.clone_weight > 0 and s.clone_share > 0
        refs = self.cloner().reference(cond.motion_reference, n_frames, fps, (key_px.shape[-1], key_px.shape[-2]), plans, s, seed) if cloning else None
        prev, prev_start, prev_maps = None, 0, None
        for n, (start, length) in enumerate(plans):
            if n == 0:
                source, known = key_lat[0], (key_lat if s.pin_keyframe else None)
            else:
                off = start - prev_start
                source, known = prev[off], prev[off : off + (prev_start + len(prev) - start)]
            tokens = key_tokens
            if anchor == "last-frame" and n > 0:
                tokens = self.model.tokens(self.image_embeds(decode_latents(self.vae, source[None])).to(dev), desc)
            cond_lat = augment(source[None] / sf, noise_aug, _gen(seed, 2, n))
            last = n == len(plans) - 1
            seg_s = s if s.guides(n) else replace(s, guidance_min=1.0, guidance_max=1.0)
            known_now, end_now, tau_now = known, end_lat if last else None, s.tau if last else 0
            clone = None
            if refs is not None:  # the reference's maps moved onto where this segment's subject is
                still = source[None, None].expand(1, length, -1, -1, -1).to(dev)
                if self.model.settings.flow_channels:
                    still = torch.cat([still, torch.zeros((1, length, self.model.settings.flow_channels, *still.shape[-2:]), device=dev)], dim=2)
                shot_fg = self.cloner().foreground(still, decode_latents(self.vae, source[None]), s.clone_sigma, s, sub_seed(seed, 11, n))
                clone = self.cloner().targets(refs[n], shot_fg, s.clone_background, s.clone_top_k)
            maps, warped, warped_px = None, None, None
            if field is not None:  # where each frame's pixels were in the keyframe, and the keyframe moved there
                maps, warped_px, warped = segment_frames(field, field_text, key_px[0], None if n == 0 else tuple(m[start - prev_start] for m in prev_maps), length,
                                                         self.vae, self.device, start_time=start / fps, visibility=s.motion_field_visibility,
                                                         duration=cond.duration or n_frames / fps)
                warped[0] = source
            units, tried = step_units(s, n, length, clone is not None), []
            on_step = (lambda units=units: progress.advance(units)) if progress is not None else None

            def sample(k: int) -> torch.Tensor:  # candidate 0: the segment's own noise (the plain sample)
                tried.append(k)
                return self.sample_segment(cond_lat, tokens, ids, length, seg_s, sub_seed(seed, 10, n) if k == 0 else sub_seed(seed, 10, n, k),
                                           end=end_now, tau=tau_now, known=known_now, on_step=on_step, anchor=anchor_lat,
                                           clone=clone, base=source[None], warped=warped,
                                           seen=None if maps is None else maps[1]).float().cpu()

            raw = choose(n, sample)
            if progress is not None:
                progress.segment_done(len(tried))
            lat = raw.clone()
            if known is not None:
                w = blend_weights(len(known)).view(-1, 1, 1, 1)
                lat[: len(known)] = w * known.cpu() + (1 - w) * raw[: len(known)]
            if record is not None:
                record.append(SegmentRecord(start, length, raw, lat.clone(), 0 if known is None else len(known), warped_px,
                                            None if maps is None else maps[1]))
            stop = length if last else plans[n + 1][0] - start + 1
            yield lat[(0 if n == 0 else 1) : stop]
            prev, prev_start, prev_maps = lat, start, maps

    def frames(self, keyframe, n_frames: int, condition=None, end_frame=None, seed: int = 0, fps: int | None = None,
               anchor: str = "keyframe", progress: WorkMeter | None = None, **overrides) -> Iterator[np.ndarray]:
        """The shot's frames (uint8 [H, W, 3]), streamed: each segment is decoded in chunks as soon as it is final."""
        chunk = int(overrides.get("decode_chunk") or self.settings.decode_chunk)
        records: list[SegmentRecord] = []
        for n, lat in enumerate(self.latents(keyframe, n_frames, condition, end_frame, seed, fps, anchor, record=records, progress=progress, **overrides)):
            rec, first = records[-1], (0 if n == 0 else 1)  # the segment's yielded frames start there
            del records[:-1]  # flat memory over a long shot
            for i in range(0, len(lat), chunk):
                px = decode_latents(self.vae, lat[i : i + chunk], chunk)
                if rec.pixels is not None:  # the keyframe's own pixels where the motion field saw them, the clip model's elsewhere
                    k = slice(first + i, first + i + len(px))
                    w = rec.seen[k, None].to(px)
                    px = w * rec.pixels[k].to(px) + (1 - w) * px
                yield from to_uint8(px)


# ---------------------------------------------------------------------------------------------------- pipeline


class I2VClipRenderer:
    """The pipeline's `ClipRenderer` (moviedreamer/pipeline/components.py) on the anchored I2V model."""

    def __init__(self, sampler: AnchoredSampler, fingerprint: str = "", **overrides):
        self.sampler, self.overrides = sampler, overrides
        self.fingerprint = fingerprint or "i2v-unfingerprinted"
        sampler.weights_fingerprint = fingerprint

    def work(self, n_frames: int, condition=None) -> list[SegmentWork]:
        """The denoising work of a shot, per segment (video/work.py), for progress counted in work; `condition` (the
        shot's ClipCondition): a motion reference costs its guidance steps."""
        return self.sampler.work(n_frames, bool(as_condition(condition).motion_reference), **self.overrides)

    def cache_to(self, folder: str | Path) -> None:
        """Keep motion references' maps (video/motion_clone.py) in `folder`, so a resumed run reads each once."""
        self.sampler.clone_cache, self.sampler._cloner = Path(folder), None

    def render(self, keyframe: np.ndarray, n_frames: int, condition, seed: int, fps: int, end_frame: np.ndarray | None = None,
               progress: WorkMeter | None = None) -> Iterator[np.ndarray]:
        yield from self.sampler.frames(keyframe, n_frames, condition, end_frame, seed, fps, progress=progress, **self.overrides)


def folder_files(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file())
