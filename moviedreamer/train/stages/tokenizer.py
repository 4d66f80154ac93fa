"""`moviedreamer train tokenizer`: the keyframe tokenizer (diffusion autoencoder, moviedreamer/tokenizer/), docs/tokenizer.md.

Samples: one per shot: its keyframe (mirrored with p = 0.5 under `hflip`, "left"/"right" swapped in its texts), the
shot's descriptor slots (setting, action, camera, style, the descriptions of its characters: render.py) and the face
embeddings of its characters (a random crop of each character in the episode under `random_face`, else one from the
shot). Frozen encoders run once per (episode, shot, mirror): CLIP patch tokens and pooled embedding, VAE latent
(posterior mode, scaled); they are cached in memory (`cache_size` entries), descriptor embeddings are cached per text,
face embeddings per episode (or read from the shards' `face_embeddings`).

Loss: denoising MSE (epsilon or v, the decoder's schedule), optional min-SNR weighting, with the inputs masked at
the `mask` rates (tokens per sample, descriptor and face slots each, whole rows: the CFG null condition).
Only the compressor and the decoder are in the DeepSpeed engine; CLIP, the VAE, the descriptor encoder and the face
embedder stay frozen outside it. `model.init_unet` starts the decoder from an SDXL UNet folder (paper profile).
"""

from __future__ import annotations

import os
import shutil
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F

from moviedreamer.encoders.clip_vision import load_vision_encoder
from moviedreamer.encoders.faces import load_face_pack
from moviedreamer.encoders.longclip import embed_texts, load_descriptor_encoder
from moviedreamer.errors import UserError
from moviedreamer.pipeline.profile import Profile
from moviedreamer.safeio import load_json
from moviedreamer.script.shot_text import load_episode_story as read_story
from moviedreamer.script.load import load_story
from moviedreamer.script.shot_text import FIXED_SLOTS, story_shot_texts, swap_left_right
from moviedreamer.tokenizer.autoencoder import KeyframeTokenizer, TokenizerSettings, load_vae, vae_settings
from moviedreamer.tokenizer.decoder import DecoderConfig, MaskRates, build_unet, draw_keep, load_unet_folder, pad_slots, time_ids
from moviedreamer.tokenizer.references import check_shared_space, embed_frames, reference_slot
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import face_owners, read_story_params
from moviedreamer.train.data import ShardIndex
from moviedreamer.train.harness import Stage
from moviedreamer.train.stages.ar_references import portrait, story_to_world_ids
from moviedreamer.train.stages.tokenizer_args import TokenizerModelArgs, TokenizerOptions
from moviedreamer.train.stages.tokenizer_utils import load_matching, region_weight_map

PARTS = {"vision_encoder": "a CLIP vision encoder (open_clip folder, HF CLIPVisionModelWithProjection folder or open_clip checkpoint)",
         "vae": "a diffusers AutoencoderKL folder", "descriptor_encoder": "a descriptor encoder (open_clip folder, LongCLIP .pt, HF CLIP text folder)",
         "face_analysis": "an insightface model-pack folder"}


class TokenizerStage(Stage):
    name = "tokenizer"
    keys = ("keyframes", "faces", "face_identity", "face_shot", "face_embeddings")
    mix = 4

    def __init__(self, cfg):
        super().__init__(cfg)
        self.args, self.opts = self.parse_sections(TokenizerModelArgs, TokenizerOptions)
        if self.opts.region_weight.active:
            self.keys = self.keys + ("shots",)  # the per-shot boxes (the episode's .json)
        for key in (*PARTS, "init_unet", "init_from", "init_weights"):
            path = getattr(self.args, key)
            if path is not None and not Path(path).expanduser().exists():
                raise UserError(f"model.{key}: expected {PARTS.get(key, 'a folder')}, found no such path: {path}")
        self.device = torch.device("cpu")
        self._cache: dict = {}
        self._faces: dict = {}
        self._world: dict = {}

    # ------------------------------------------------------------------------------------------------ frozen parts

    @cached_property
    def profile(self) -> Profile:
        return Profile.load(self.args.encoders)

    def part(self, key: str) -> tuple[Path, str | None]:
        path = getattr(self.args, key)
        if path is not None:
            return Path(path).expanduser(), {"vision_encoder": self.args.vision_format, "descriptor_encoder": self.args.descriptor_format}.get(key)
        if self.args.encoders is None:
            raise UserError(f"model.{key}: expected {PARTS[key]} (or model.encoders, a checkpoints profile), found neither")
        return self.profile.path(key), self.profile.component(key).format

    @cached_property
    def vision(self):
        path, fmt = self.part("vision_encoder")
        enc = load_vision_encoder(path, fmt, self.opts.encoder_device or "cpu")
        enc.model.requires_grad_(False)
        return enc

    @cached_property
    def vae(self):
        return load_vae(self.part("vae")[0]).to(self.opts.encoder_device or "cpu")

    @cached_property
    def vae_info(self) -> dict:
        return vae_settings(self.vae, self.opts.resolution)

    @cached_property
    def descriptor(self):
        path, fmt = self.part("descriptor_encoder")
        return load_descriptor_encoder(path, fmt, self.opts.encoder_device or "cpu")

    @cached_property
    def face_embedder(self):
        return load_face_pack(self.part("face_analysis")[0])

    @cached_property
    def index(self):
        return ShardIndex(self.cfg.data)

    @cached_property
    def face_dim(self) -> int:
        if self.args.face_dim:
            return self.args.face_dim
        if self.opts.face_source != "embedder":
            ep = self.index.load(0, ("face_embeddings",))
            if "face_embeddings" in ep:
                return int(ep["face_embeddings"].shape[-1])
        return int(self.face_embedder.embed_dim)

    # ------------------------------------------------------------------------------------------------ model

    def build_model(self):
        a, o = self.args, self.opts
        if a.init_from is not None:
            model = KeyframeTokenizer.from_pretrained(a.init_from).train().requires_grad_(True)
        else:
            if a.init_unet is not None or a.init_unet_component is not None:
                folder = a.init_unet
                if folder is None:
                    profile, key = a.init_unet_component.split(".")
                    folder = Profile.load(profile).path(key)
                unet = load_unet_folder(folder)
            else:
                unet = build_unet(a.unet, self.vae_info["latent_channels"], o.resolution // self.vae_info["vae_downsample"], a.pooled_dim)
            v = self.vision
            comp = {"patch_dim": v.width, "pooled_dim": v.embed_dim if a.use_pooled else 0, "num_patches": v.num_patches,
                    "n_tokens": a.n_tokens, "token_dim": a.token_dim, **a.compressor}
            dec = {"token_dim": a.token_dim, "n_tokens": a.n_tokens, "descriptor_dim": self.descriptor.embed_dim, "face_dim": self.face_dim, **a.decoder}
            model = KeyframeTokenizer.build(comp, dec, unet, TokenizerSettings(resolution=o.resolution, **self.vae_info))
            if a.init_weights is not None:
                load_matching(model, a.init_weights, a.init_exclude, a.init_zero)
        if model.settings.latent_channels != self.vae_info["latent_channels"] or model.settings.resolution != o.resolution:
            raise UserError(f"model.init_from: trained at {model.settings.resolution} px with {model.settings.latent_channels} latent channels; "
                            f"this run has {o.resolution} px and a VAE with {self.vae_info['latent_channels']}")
        if o.freeze_compressor:
            if a.init_from is None and (a.init_weights is None or any(x.startswith("compressor") for x in a.init_exclude)):
                raise UserError("options.freeze_compressor: a frozen compressor needs trained weights; set model.init_from to a tokenizer folder "
                                "(or model.init_weights without excluding the compressor)")
            model.compressor.requires_grad_(False)
        if o.gradient_checkpointing:
            model.decoder.unet.enable_gradient_checkpointing()
        if o.reference_prompt_p:
            check_shared_space(self.vision, self.descriptor)
            model.decoder.config.reference_prompts = True
        return model

    def after_initialize(self, engine, world_size: int) -> None:
        self.device = engine.device
        if self.opts.encoder_device is None:
            self.vae.to(self.device)
            self.vision.model.to(self.device)
            self.vision.device = torch.device(self.device)

    @cached_property
    def schedule(self) -> dict:
        return self.decoder_config.schedule

    @cached_property
    def noise(self):
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.schedule, clip_sample=False)

    # ------------------------------------------------------------------------------------------------ data

    def story(self, episode: dict):
        return read_story(self.index.path(episode["index"], ".yaml"))

    def episode_faces(self, episode: dict) -> dict[str, list[tuple[int, torch.Tensor]]]:
        """Character id → [(shot, embedding)] of its face crops in this episode."""
        ep_id = episode["meta"]["id"]
        if ep_id not in self._faces:
            ident = episode.get("face_identity")
            out: dict = {}
            if ident is not None and len(ident):
                if "face_embeddings" in episode and self.opts.face_source != "embedder":
                    emb = episode["face_embeddings"].float()
                elif self.opts.face_source == "shards":
                    raise UserError(f"episode {ep_id}: options.face_source is 'shards' but the shard has no face_embeddings")
                else:
                    emb = self.face_embedder.embed_crops([c.numpy() for c in episode["faces"]]).float()
                names = self.index.meta.get("identities", [])
                owners = face_owners(self.story(episode), names)  # a face name -> the script ids with that face
                shots = episode.get("face_shot", torch.full((len(ident),), -1)).tolist()
                for i, s, e in zip(ident.tolist(), shots, emb):
                    name = names[i] if i < len(names) else str(i)
                    for cid in owners.get(name, [name]):
                        out.setdefault(cid, []).append((int(s), e))
            if len(self._faces) > 64:
                self._faces.clear()
            self._faces[ep_id] = out
        return self._faces[ep_id]

    def world_ids(self, episode: dict) -> tuple[dict[str, str], int]:
        """(script id -> toy-world id, fps) of an episode's characters, read back from its script (toy world only)."""
        ep_id = episode["meta"]["id"]
        if ep_id not in self._world:
            path = self.index.path(episode["index"], ".yaml")
            try:
                loaded = load_story(path)
                ids = story_to_world_ids(loaded.story, read_story_params(loaded))
            except Exception as e:  # a script the toy grammar cannot read: not a toy-world episode
                raise UserError(f"{path}: options.reference_prompt_p needs toy-world episodes (their characters are rendered as "
                                f"references); this one could not be read back ({str(e).splitlines()[0][:160]})") from None
            if len(self._world) > 64:
                self._world.clear()
            self._world[ep_id] = (ids, loaded.story.fps)
        return self._world[ep_id]

    def reference_prompts(self, episode: dict, shot, desc: torch.Tensor, flip: bool, rng) -> None:
        """With chance reference_prompt_p per character of the shot, its descriptor slot (in place) becomes the image
        embedding of a portrait of it, as a story's `characters[].references:` reach the decoder at inference."""
        ids, fps = self.world_ids(episode)
        size = tuple(episode["keyframes"].shape[1:3][::-1])
        for j, cid in enumerate(shot.characters):
            if cid in ids and rng.random() < self.opts.reference_prompt_p:
                frame = render_frame(portrait(ids[cid], rng), 0, fps, size).image
                frame = frame[:, ::-1] if flip else frame
                k = len(FIXED_SLOTS) + j
                desc[k] = reference_slot(embed_frames(self.vision, frame[None].copy()), desc[k])

    @torch.no_grad()
    def features(self, ep_id: str, keyframes: torch.Tensor, picks: list[tuple[int, bool]]) -> list[tuple]:
        """(latent, patches, pooled) of the keyframes (shot, mirrored) - cached, computed in one batch when missing."""
        todo = [(s, f) for s, f in picks if (ep_id, s, f) not in self._cache]
        out = {}
        if todo:
            x = torch.stack([keyframes[s].flip(1) if f else keyframes[s] for s, f in todo]).permute(0, 3, 1, 2)  # uint8 [B, 3, H, W]
            pooled, patches = self.vision.encode_image(x)
            px = x.float() / 127.5 - 1.0
            r = self.opts.resolution
            if px.shape[-2:] != (r, r):
                px = F.interpolate(px, size=(r, r), mode="area" if px.shape[-1] > r else "bilinear", align_corners=None if px.shape[-1] > r else False)
            dev = next(self.vae.parameters()).device
            z = self.vae.encode(px.to(dev, self.vae.dtype)).latent_dist.mode().float()
            z = (z - self.vae_info["vae_shift_factor"]) * self.vae_info["vae_scaling_factor"]
            for i, key in enumerate(todo):
                item = (z[i].cpu(), patches[i].cpu(), pooled[i].cpu())
                out[key] = item
                if len(self._cache) < self.opts.cache_size:
                    self._cache[(ep_id, *key)] = item
        return [out.get(p) or self._cache[(ep_id, *p)] for p in picks]

    def samples(self, episode: dict, rng) -> list:
        keyframes = episode.get("keyframes")
        if keyframes is None:
            raise UserError(f"episode {episode['meta'].get('id')}: the tokenizer stage needs `keyframes` in the shards (docs/data_format.md)")
        story = self.story(episode)
        shots = [(scene, shot) for _, _, scene, shot in story.shots()]
        if len(shots) != len(keyframes):
            raise UserError(f"episode {episode['meta']['id']}: {len(shots)} shots in its script but {len(keyframes)} keyframes")
        flips = [bool(self.opts.hflip and rng.random() < 0.5) for _ in shots]
        keep = [s for s, (_, shot) in enumerate(shots) if len(shot.characters) >= self.opts.min_characters]
        feats = dict(zip(keep, self.features(episode["meta"]["id"], keyframes, [(s, flips[s]) for s in keep])))
        faces = self.episode_faces(episode)
        face_dim = self.face_dim
        metas = episode.get("shots") or [{}] * len(shots)
        rw = self.opts.region_weight
        out = []
        for s in keep:
            (scene, shot), flip, (z, patches, pooled) = shots[s], flips[s], feats[s]
            texts = story_shot_texts(story, scene, shot, swap_left_right if flip else None)
            face_rows = []
            for cid in shot.characters:
                crops = faces.get(cid, [])
                same = [e for sh, e in crops if sh == s]
                if not crops:
                    face_rows.append(torch.zeros(face_dim))
                elif self.opts.random_face:
                    face_rows.append(crops[int(rng.integers(len(crops)))][1])
                else:
                    face_rows.append(same[0] if same else crops[0][1])
            desc = embed_texts(self.descriptor, texts)
            if self.opts.reference_prompt_p:
                self.reference_prompts(episode, shot, desc, flip, rng)
            out.append({"latent": z, "patches": patches, "pooled": pooled, "desc": desc,
                        "faces": torch.stack(face_rows) if face_rows else torch.zeros(0, face_dim), "frame": keyframes[s], "flip": flip})
            if rw.active:
                m = metas[s]
                out[-1]["weight"] = region_weight_map(m.get("boxes"), m.get("face_boxes"), keyframes.shape[2], tuple(z.shape[-2:]), flip,
                                                      rw.characters, rw.faces)
        return out

    def collate(self, samples: list, device, dtype):
        dec = self.decoder_config
        b = len(samples)
        z = torch.stack([s["latent"] for s in samples])
        desc, desc_on, desc_given = pad_slots([s["desc"] for s in samples], dec.max_descriptors, dec.descriptor_dim, "descriptors")
        faces, face_on, face_given = pad_slots([s["faces"] for s in samples], dec.max_faces, dec.face_dim, "faces")
        m = self.opts.mask
        keep_tokens, keep_desc, keep_face = draw_keep(b, dec.max_descriptors, dec.max_faces, MaskRates(m.tokens, m.descriptors, m.faces, m.uncond))
        shown = (keep_tokens | keep_desc.any(1) | keep_face.any(1))[:, None]  # a fully masked row is the null condition: no slot given
        desc_given, face_given = desc_given & shown, face_given & shown
        noise = torch.randn(z.shape)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (b,))
        noisy = self.noise.add_noise(z, noise, t)
        target = noise if self.schedule["prediction_type"] == "epsilon" else self.noise.get_velocity(z, noise, t)
        r = self.opts.resolution
        to = dict(device=device, dtype=dtype)
        pooled = torch.stack([s["pooled"] for s in samples])
        return {"patches": torch.stack([s["patches"] for s in samples]).to(**to), "pooled": pooled.to(**to), "noisy": noisy.to(**to),
                "timesteps": t.to(device), "descriptors": desc.to(**to), "desc_on": (desc_on & keep_desc).to(device), "faces": faces.to(**to),
                "face_on": (face_on & keep_face).to(device), "keep_tokens": keep_tokens.to(device),
                "desc_given": desc_given.to(device), "face_given": face_given.to(device), "ids": time_ids(r, r, b).to(**to),
                "target": target.to(device), "snr": self.snr(t).to(device),
                "weight": torch.stack([s["weight"] for s in samples])[:, None].to(device) if "weight" in samples[0] else None,
                "kept": {"tokens": keep_tokens.float().mean().item(), "faces": (face_on & keep_face).sum().item() / max(1, face_on.sum().item())}}

    @cached_property
    def decoder_config(self):
        if self.args.init_from is not None:
            return DecoderConfig.from_dict(load_json(Path(self.args.init_from) / "config.json")["decoder"])
        return DecoderConfig.from_dict({"token_dim": self.args.token_dim, "n_tokens": self.args.n_tokens, "descriptor_dim": self.descriptor.embed_dim,
                                        "face_dim": self.face_dim, **self.args.decoder})

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ac = self.noise.alphas_cumprod[t]
        return ac / (1 - ac)

    # ------------------------------------------------------------------------------------------------ loss

    def loss(self, model, batch):
        b = batch
        pred = model(b["patches"], b["pooled"], b["noisy"], b["timesteps"], b["descriptors"], b["desc_on"], b["faces"], b["face_on"], b["keep_tokens"], b["ids"],
                     b["desc_given"], b["face_given"])
        sq = (pred.float() - b["target"].float()).pow(2)
        mse = sq.mean()
        err = (sq if b.get("weight") is None else sq * b["weight"]).flatten(1).mean(1)
        if self.opts.snr_gamma is not None:
            snr = b["snr"].float()
            w = snr.clamp(max=self.opts.snr_gamma) / (snr if self.schedule["prediction_type"] == "epsilon" else snr + 1)
            loss = (w * err).mean()
        else:
            loss = mse
        return loss, {"mse": mse.item(), "tokens_kept": b["kept"]["tokens"], "faces_kept": b["kept"]["faces"]}

    # ------------------------------------------------------------------------------------------------ export

    def export(self, model, out_dir: Path, stream) -> dict:
        model = model.float().eval()
        sources = {}
        for key in ("vision_encoder", "vae"):
            path, fmt = self.part(key)
            rel = os.path.relpath(Path(path).resolve(), Path(self.cfg.export_dir).resolve())
            sources[key] = {"path": rel, **({"format": fmt} if fmt else {})}
        model.settings.sources = sources
        model.cpu().save_pretrained(out_dir, None if self.opts.export_dtype == "float32" else getattr(torch, self.opts.export_dtype))
        if self.opts.bundle_frozen:
            self.vae.save_pretrained(str(out_dir / "vae"), safe_serialization=True)
            src = self.part("vision_encoder")[0]
            if src.is_dir():
                shutil.copytree(src, out_dir / "vision_encoder")
            else:
                (out_dir / "vision_encoder").mkdir()
                shutil.copy2(src, out_dir / "vision_encoder" / src.name)
        figures = {"params": sum(p.numel() for p in model.parameters()), "unet_params": sum(p.numel() for p in model.decoder.unet.parameters()),
                   "compressor_params": sum(p.numel() for p in model.compressor.parameters()), "n_tokens": model.compressor.config.n_tokens,
                   "token_dim": model.compressor.config.token_dim}
        if self.opts.export_samples:
            samples = stream.take(self.opts.export_samples)
            model.attach(vae=self.vae)
            tokens = model.compressor(torch.stack([s["patches"] for s in samples]), torch.stack([s["pooled"] for s in samples]))
            images = model.decode(tokens, [s["desc"] for s in samples], [s["faces"] for s in samples], seed=self.cfg.seed)
            r = self.opts.resolution
            ref = torch.stack([s["frame"].flip(1) if s["flip"] else s["frame"] for s in samples]).permute(0, 3, 1, 2).float() / 255
            ref = F.interpolate(ref, size=(r, r), mode="area") if ref.shape[-1] != r else ref
            mse = (images - ref).pow(2).flatten(1).mean(1)
            figures["export_psnr"] = float((-10 * torch.log10(mse + 1e-12)).mean())
            figures["export_samples"] = len(samples)
            model.frozen.vae = None
        return figures


STAGE = TokenizerStage
