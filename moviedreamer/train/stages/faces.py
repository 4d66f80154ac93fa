"""`moviedreamer train faces`: the toy face pack — detector (SCRFD layout) + ArcFace-style recognizer, trained
together on toy keyframes, exported as an insightface model-pack folder (two ONNX files + pack.json).

Each sample is a keyframe with its face boxes. The detector learns boxes and template landmarks on the whole
frame; the recognizer learns identities (additive angular margin) on the crops that insightface's `norm_crop`
cuts from those landmarks, jittered as a detector's would be, so training sees what inference will.
Frames are softened at random (blur, noise) so the pack also works on generated frames.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from moviedreamer.encoders.onnx_half import store_weights_in_float16
from moviedreamer.encoders.arcface import INPUT_SIZE, AdditiveAngularMarginLoss, ToyArcFaceNet, export_onnx
from moviedreamer.encoders.evaluate import fresh_frames
from moviedreamer.encoders.toy_detector import INPUT_MEAN, INPUT_STD, ToyFaceDetector, box_landmarks, detector_loss, export_detector_onnx, targets
from moviedreamer.errors import UserError
from moviedreamer.toyworld.world import CHARACTER_IDS, FACE_KEYS, face_key
from moviedreamer.train.data import ShardIndex
from moviedreamer.train.harness import Stage

DETECTOR_FILE, RECOGNIZER_FILE = "det_toy.onnx", "rec_toy_arcface.onnx"


class FacesModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embed_dim: int = Field(128, ge=8)
    recognizer_width: int = Field(32, ge=4)
    detector_width: int = Field(32, ge=4)
    margin: float = Field(0.5, ge=0, le=1.0)
    scale: float = Field(32.0, gt=0)


class FacesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_face: int = Field(16, ge=4, description="faces smaller than this (px) are not cropped for the recognizer")
    jitter: float = Field(0.06, ge=0, description="landmark jitter, as a fraction of the face size")
    soften: float = Field(0.5, ge=0, le=1, description="probability of blurring + noising a frame")
    det_size: int = Field(128, ge=32, description="the detector's input size at inference (pack.json)")
    det_thresh: float = Field(0.5, gt=0, lt=1)
    max_crops: int = Field(48, ge=1, description="face crops per batch at most")
    source: Literal["render", "shards"] = Field("render", description="render: fresh toy frames at random shot times, "
                                                "seeded per episode (unlimited poses); shards: the keyframes and face boxes of the data")
    frames_per_episode: int = Field(16, ge=1, description="render: frames drawn per episode visit")
    composed: float = Field(0.0, ge=0, le=1, description="render: share of shots that cast random compositional characters; "
                            "with it, identities are the world's faces (world.FACE_KEYS), not the catalogue's people")
    export_weights: Literal["float32", "float16"] = Field("float16", description="how the ONNX files store their weights "
                                                          "(computed in float32 either way: encoders/onnx_half.py)")


class FacesStage(Stage):
    name = "faces"
    keys = ("keyframes", "shots")
    mix = 4

    def __init__(self, cfg):
        super().__init__(cfg)
        self.args, self.opts = self.parse_sections(FacesModelArgs, FacesOptions)
        if self.opts.source == "render":
            self.keys = ()  # the episode only seeds what is rendered
            self.identities = list(FACE_KEYS) if self.opts.composed > 0 else list(CHARACTER_IDS)
            return
        self.identities = list(ShardIndex(cfg.data).meta.get("identities", []))
        if not self.identities:
            raise UserError(f"{cfg.data}/index.json: expected an 'identities' list (the face labels), found none")

    def build_model(self):
        return FacesTrainer(self.args, len(self.identities))

    def samples(self, episode: dict, rng) -> list:
        if self.opts.source == "render":
            # seeds below 40M: evaluation renders (encoders/evaluate.py) use 50M and up
            frames = fresh_frames(self.opts.frames_per_episode, int(rng.integers(40_000_000)), composed=self.opts.composed)
            label = (lambda c: self.identities.index(face_key(c))) if self.opts.composed > 0 else self.identities.index
            return [(torch.from_numpy(f.image), [(label(c), b) for c, b in f.face_boxes.items() if c in f.visible]) for f in frames]
        out = []
        for frame, shot in zip(episode["keyframes"], episode["shots"]):
            faces = [(self.identities.index(cid), box) for cid, box in shot.get("face_boxes", {}).items() if cid in self.identities]
            out.append((frame, faces))
        return [out[i] for i in rng.permutation(len(out))]

    def collate(self, samples: list, device, dtype):
        # insightface is heavy: loaded only when a face pack is read
        from insightface.utils import face_align

        frames = torch.stack([f for f, _ in samples]).permute(0, 3, 1, 2).float()
        soft = torch.rand(len(frames)) < self.opts.soften
        if soft.any():
            frames[soft] = soften(frames[soft])
        images = frames.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        size = (images.shape[2], images.shape[1])
        labels, dist, kps = targets([[b for _, b in faces] for _, faces in samples], size)
        crops, ids = [], []
        jitter_rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))  # from the step's seeded torch RNG
        for img, (_, faces) in zip(images, samples):
            for ident, box in faces:
                if min(box[2] - box[0], box[3] - box[1]) < self.opts.min_face or len(crops) >= self.opts.max_crops:
                    continue
                lm = box_landmarks(box) + jitter_rng.normal(0, self.opts.jitter * (box[3] - box[1]), (5, 2))
                with warnings.catch_warnings():  # scikit-image deprecations inside insightface's alignment
                    warnings.simplefilter("ignore", FutureWarning)
                    crop = face_align.norm_crop(np.ascontiguousarray(img[:, :, ::-1]), landmark=lm.astype(np.float32), image_size=INPUT_SIZE)
                crops.append(crop[:, :, ::-1].copy())
                ids.append(ident)
        det_in = (frames - INPUT_MEAN) / INPUT_STD
        rec_in = (torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() - 127.5) / 127.5 if crops else torch.zeros(0, 3, INPUT_SIZE, INPUT_SIZE)
        to = dict(device=device)
        return det_in.to(**to, dtype=dtype), (labels.to(**to), dist.to(**to), kps.to(**to)), rec_in.to(**to, dtype=dtype), torch.tensor(ids, device=device)

    def loss(self, model, batch):
        det_in, det_targets, rec_in, ids = batch
        det_out, arc = model(det_in, rec_in, ids)
        det, metrics = detector_loss(det_out.float(), *det_targets)
        return det + arc, {**metrics, "arcface": arc.item(), "crops": float(len(ids))}

    def export(self, model, out_dir: Path, stream) -> dict:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        export_detector_onnx(model.detector, out_dir / DETECTOR_FILE, self.opts.det_size)
        export_onnx(model.recognizer, out_dir / RECOGNIZER_FILE)
        if self.opts.export_weights == "float16":
            for name in (DETECTOR_FILE, RECOGNIZER_FILE):
                store_weights_in_float16(out_dir / name)
        (out_dir / "pack.json").write_text(json.dumps({"det_size": [self.opts.det_size] * 2, "det_thresh": self.opts.det_thresh}))
        return {"params": sum(p.numel() for p in model.detector.parameters()) + sum(p.numel() for p in model.recognizer.parameters())}


def soften(frames: torch.Tensor) -> torch.Tensor:
    """Blur (Gaussian, sigma up to 1.2 px) and noise (std up to 6 levels): frames [B, 3, H, W] in 0..255."""
    out = []
    for f in frames:
        sigma = float(torch.rand(())) * 1.2
        if sigma > 0.2:
            k = torch.arange(-3, 4, dtype=f.dtype)
            g = torch.exp(-(k**2) / (2 * sigma**2))
            g = g / g.sum()
            f = F.conv2d(F.pad(f[:, None], (3, 3, 0, 0), mode="replicate"), g.view(1, 1, 1, 7))
            f = F.conv2d(F.pad(f, (0, 0, 3, 3), mode="replicate"), g.view(1, 1, 7, 1))[:, 0]
        out.append(f + torch.randn_like(f) * float(torch.rand(())) * 6)
    return torch.stack(out)


class FacesTrainer(torch.nn.Module):
    def __init__(self, args: FacesModelArgs, num_identities: int):
        super().__init__()
        self.detector = ToyFaceDetector(args.detector_width)
        self.recognizer = ToyArcFaceNet(args.embed_dim, args.recognizer_width)
        self.margin = AdditiveAngularMarginLoss(args.embed_dim, num_identities, args.scale, args.margin)

    def forward(self, det_in, rec_in, ids):
        det_out = self.detector(det_in)
        if len(ids) < 2:  # BatchNorm needs two crops; a batch without faces trains the detector only
            return det_out, det_out.sum() * 0
        return det_out, self.margin(self.recognizer(rec_in), ids)


STAGE = FacesStage
