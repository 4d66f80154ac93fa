"""`moviedreamer train presence`: the presence probe (encoders/presence.py) on the training shards' frames.

A sample is one frame of a shot (its keyframe or a frame of its clip, mirrored with p = 0.5) with the descriptions of
the story's characters as queries: the shot's characters are labelled present, the others absent, plus
`extra_negatives` descriptions drawn from other stories (characters the story does not have). The count head learns
how many characters the shot has. The frozen vision encoder runs once per (episode, shot, frame, mirror) in
`samples`, batched per episode; its tokens are cached (`cache_size` entries), so later epochs cost only the probe.
Only the probe is in the DeepSpeed engine. Exported: the probe folder, with its accuracy on `export_samples` frames.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms.functional import gaussian_blur

from moviedreamer.encoders.longclip import embed_texts
from moviedreamer.encoders.presence import PresenceConfig, PresenceProbe, frame_pixels, frame_views, save_presence
from moviedreamer.errors import UserError
from moviedreamer.pipeline.profile import Profile
from moviedreamer.script.shot_text import load_episode_story as read_story
from moviedreamer.train.data import ShardIndex
from moviedreamer.train.harness import Stage


class PresenceModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encoders: str = Field("toy", description="checkpoints profile giving vision_encoder and descriptor_encoder")
    width: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    grid: int = Field(2, ge=1, le=4, description="vision backbone: grid x grid tiles plus the whole frame")
    max_count: int = Field(4, ge=1)
    backbone: Literal["vision", "pixels"] = Field("vision", description="the profile's frozen vision encoder, or a small CNN trained with the probe")
    input_size: int = Field(128, ge=16, description="pixels backbone: frames resized to this square size")
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 128], min_length=1, description="pixels backbone: one stride-2 stage each")


class PresenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frames_per_shot: int = Field(3, ge=1, description="the keyframe plus frames drawn from the shot's clip")
    hflip: bool = True
    extra_negatives: int = Field(2, ge=0, description="descriptions from other stories added as absent characters")
    count_weight: float = Field(0.5, ge=0)
    blur_prob: float = Field(0.0, ge=0, le=1, description="pixels backbone: blur a frame at random (sigma 0.3-1.2 px), as decoded frames are softer than renders")
    cache_size: int = Field(40000, ge=0)
    export_samples: int = Field(512, ge=0)


class PresenceStage(Stage):
    name = "presence"
    keys = ("keyframes", "clips")
    mix = 4

    def __init__(self, cfg):
        super().__init__(cfg)
        self.args, self.opts = self.parse_sections(PresenceModelArgs, PresenceOptions)
        self._cache: dict = {}
        self._texts: dict[str, torch.Tensor] = {}  # description → embedding, every story seen so far

    @cached_property
    def profile(self) -> Profile:
        return Profile.load(self.args.encoders)

    @cached_property
    def vision(self):
        enc = self.profile.vision
        enc.model.requires_grad_(False)
        return enc

    @cached_property
    def descriptor(self):
        return self.profile.descriptor

    @cached_property
    def index(self):
        return ShardIndex(self.cfg.data)

    @cached_property
    def config(self):
        a = self.args
        patch_dim = int(self.vision.width) if a.backbone == "vision" else a.channels[-1]
        return PresenceConfig(patch_dim=patch_dim, look_dim=int(self.descriptor.embed_dim), width=a.width, heads=a.heads, layers=a.layers,
                              grid=a.grid, max_count=a.max_count, backbone=a.backbone, input_size=a.input_size, channels=tuple(a.channels))

    def build_model(self):
        probe = PresenceProbe(self.config)
        probe.look_centre.copy_(self.look_centre())
        return probe

    def look_centre(self, episodes: int = 200) -> torch.Tensor:
        """The mean unit description of the characters of the first `episodes` training stories."""
        texts = []
        for i in range(min(episodes, len(self.index))):
            texts += [c.description for c in read_story(self.index.path(i, ".yaml")).characters if c.description]
        if not texts:
            return torch.zeros(self.config.look_dim)
        return F.normalize(self.looks(sorted(set(texts))), dim=-1).mean(0)

    # -- data
    def looks(self, texts: list[str]) -> torch.Tensor:
        todo = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if todo:
            for t, e in zip(todo, embed_texts(self.descriptor, todo)):
                self._texts[t] = e.float()
        return torch.stack([self._texts[t] for t in texts])

    def samples(self, episode: dict, rng) -> list:
        keyframes, clips = episode.get("keyframes"), episode.get("clips")
        if keyframes is None:
            raise UserError(f"episode {episode['meta'].get('id')}: the presence stage needs `keyframes` in the shards (docs/data_format.md)")
        story = read_story(self.index.path(episode["index"], ".yaml"))
        shots = [shot for _, _, _, shot in story.shots()]
        if len(shots) != len(keyframes):
            raise UserError(f"episode {episode['meta']['id']}: {len(shots)} shots in its script but {len(keyframes)} keyframes")
        cast_ids = [c.id for c in story.characters]
        cast = self.looks([c.description for c in story.characters])
        picks = []
        for s in range(len(shots)):
            ts = [0]
            if clips is not None and self.opts.frames_per_shot > 1 and clips.shape[1] > 1:
                k = min(self.opts.frames_per_shot - 1, clips.shape[1] - 1)
                ts += sorted(rng.choice(range(1, clips.shape[1]), size=k, replace=False).tolist())
            picks += [(s, t, bool(self.opts.hflip and rng.random() < 0.5)) for t in ts]
        tokens = self.views(episode["meta"]["id"], keyframes, clips, picks)
        out = []
        for (s, _, _), tok in zip(picks, tokens):
            present = torch.tensor([cid in shots[s].characters for cid in cast_ids])
            out.append({"tokens": tok, "cast": cast, "present": present, "count": len(shots[s].characters)})
        return out

    @torch.no_grad()
    def views(self, ep_id: str, keyframes, clips, picks) -> list[torch.Tensor]:
        todo = [p for p in picks if (ep_id, *p) not in self._cache]
        fresh = {}
        if todo:
            frames = torch.stack([(keyframes[s] if t == 0 else clips[s, t]).flip(1) if f else (keyframes[s] if t == 0 else clips[s, t])
                                  for s, t, f in todo]).numpy()
            c = self.config
            tokens = (frame_pixels(frames, c.input_size) if c.backbone == "pixels" else frame_views(self.vision, frames, c.grid)).half()
            for p, tok in zip(todo, tokens):
                fresh[p] = tok
                if len(self._cache) < self.opts.cache_size:
                    self._cache[(ep_id, *p)] = tok
        return [fresh.get(p) if p in fresh else self._cache[(ep_id, *p)] for p in picks]

    def collate(self, samples: list, device, dtype):
        pool = torch.stack(list(self._texts.values()))
        unit_pool = F.normalize(pool, dim=-1)
        m = max(len(s["cast"]) for s in samples) + self.opts.extra_negatives
        looks = torch.zeros(len(samples), m, self.config.look_dim)
        target, valid = torch.zeros(len(samples), m), torch.zeros(len(samples), m, dtype=torch.bool)
        for i, s in enumerate(samples):
            n = len(s["cast"])
            looks[i, :n], target[i, :n], valid[i, :n] = s["cast"], s["present"].float(), True
            outside = torch.nonzero((unit_pool @ F.normalize(s["cast"], dim=-1).T).amax(1) < 1 - 1e-5).flatten()  # not in this story
            extra = outside[torch.randperm(len(outside))[: self.opts.extra_negatives]]
            looks[i, n : n + len(extra)], valid[i, n : n + len(extra)] = pool[extra], True
        to = dict(device=device, dtype=dtype)
        tokens = torch.stack([s["tokens"] for s in samples])
        if self.config.backbone == "pixels" and self.opts.blur_prob > 0:
            tokens = tokens.float()
            for i in torch.nonzero(torch.rand(len(tokens)) < self.opts.blur_prob).flatten().tolist():
                tokens[i] = gaussian_blur(tokens[i], [5, 5], [0.3 + 0.9 * float(torch.rand(()))])
        count = torch.tensor([min(s["count"], self.config.max_count) for s in samples])
        return {"tokens": tokens.to(**to), "looks": looks.to(**to), "target": target.to(device),
                "valid": valid.to(device), "count": count.to(device)}

    # -- loss
    def loss(self, model, batch):
        logits, count = model(batch["tokens"], batch["looks"])
        valid = batch["valid"]
        bce = F.binary_cross_entropy_with_logits(logits.float()[valid], batch["target"][valid])
        ce = F.cross_entropy(count.float(), batch["count"])
        right = ((logits > 0) == (batch["target"] > 0.5)) | ~valid
        return bce + self.opts.count_weight * ce, {
            "bce": bce.item(), "count_ce": ce.item(), "exact": right.all(1).float().mean().item(),
            "count_acc": (count.argmax(-1) == batch["count"]).float().mean().item()}

    # -- export
    def export(self, model, out_dir: Path, stream) -> dict:
        model = model.float().eval()
        samples = stream.take(self.opts.export_samples) if self.opts.export_samples else []
        figures = {"params": sum(p.numel() for p in model.parameters())}
        if samples:
            exact, counts = [], []
            with torch.no_grad():
                for i in range(0, len(samples), 64):
                    batch = self.collate(samples[i : i + 64], "cpu", torch.float32)
                    _, metrics = self.loss(model, batch)
                    exact.append(metrics["exact"] * len(batch["count"]))
                    counts.append(metrics["count_acc"] * len(batch["count"]))
            figures.update(export_exact=round(sum(exact) / len(samples), 4), export_count_acc=round(sum(counts) / len(samples), 4),
                           export_samples=len(samples))
        save_presence(model, out_dir, {"sources": {"vision_encoder": self.args.encoders, "descriptor_encoder": self.args.encoders}, **figures})
        return figures


STAGE = PresenceStage
