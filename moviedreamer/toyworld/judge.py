"""The judge: a small CNN trained only on rendered frames that says which scene a frame shows, which
characters are visible and how it is framed (wide / medium / close-up). It referees every toy-profile
quality figure. Camera moves (pan, zoom) are not judged: a single frame cannot show them; framing can."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from moviedreamer.errors import UserError
from moviedreamer.media import frame_rate, read_frames
from moviedreamer.toyworld.judge_weights import frame_features, read_folder, save_half
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import CHARACTER_IDS, FRAMINGS, SCENE_IDS

INPUT_SIZE = 128
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "weights" / "toy" / "judge"


class Judge(nn.Module):
    def __init__(self, width: int = 32, n_scenes: int = len(SCENE_IDS), n_characters: int = len(CHARACTER_IDS), n_framings: int = len(FRAMINGS)):
        super().__init__()
        self.config = {"width": width, "n_scenes": n_scenes, "n_characters": n_characters, "n_framings": n_framings, "input_size": INPUT_SIZE,
                       "scenes": SCENE_IDS, "characters": CHARACTER_IDS, "framings": FRAMINGS}
        self.features, out_channels = frame_features(width)
        feat = 2 * out_channels  # average- and max-pooled: max pooling keeps small faces in wide shots
        self.trunk = nn.Sequential(nn.Linear(feat, 256), nn.ReLU(inplace=True))
        self.scene = nn.Linear(256, n_scenes)
        self.characters = nn.Linear(256, n_characters)
        self.framing = nn.Linear(256, n_framings)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: float [B, 3, H, W] in [0, 1] (resized to the judge's input size here)."""
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        x = self.features(images * 2 - 1)
        h = self.trunk(torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1))
        return {"scene": self.scene(h), "characters": self.characters(h), "framing": self.framing(h)}

    @torch.no_grad()
    def predict(self, frames: np.ndarray | torch.Tensor, batch: int = 64) -> list[dict]:
        """frames: uint8 [N, H, W, 3] → [{"scene", "characters", "framing", "confidence"}]."""
        self.eval()
        x = torch.from_numpy(np.array(frames, copy=True)).permute(0, 3, 1, 2).float() / 255
        out = []
        for i in range(0, len(x), batch):
            logits = self(x[i : i + batch])
            scene_p = logits["scene"].softmax(-1)
            chars = torch.sigmoid(logits["characters"]) > 0.5
            framing = logits["framing"].argmax(-1)
            for j in range(len(scene_p)):
                out.append({
                    "scene": SCENE_IDS[int(scene_p[j].argmax())],
                    "characters": tuple(CHARACTER_IDS[k] for k in torch.nonzero(chars[j]).flatten().tolist()),
                    "framing": FRAMINGS[int(framing[j])],
                    "confidence": round(float(scene_p[j].max()), 3),
                })
        return out


def save_judge(model: Judge, out_dir: str | Path, extra: dict | None = None) -> Path:
    return save_half(model, model.config, out_dir, extra)


def load_judge(path: str | Path | None = None):
    """The frame judge in `path` (default: the toy profile's): the compositional LookJudge when its config says
    "kind": "look", else the catalogue judge above. Both answer predict(frames) alike; LookJudge also takes a cast."""
    path = Path(path) if path else DEFAULT_DIR
    config, state = read_folder(path, "the toy judge", "moviedreamer toyworld train-judge -o RUN")
    if config.get("kind") == "look":
        from moviedreamer.toyworld.look_judge import LookJudge

        return LookJudge.from_state(config, state)
    model = Judge(config["width"], config["n_scenes"], config["n_characters"], config["n_framings"])
    model.load_state_dict(state)
    return model.eval()


def sample_batch(rng: np.random.Generator, n: int, augment: bool = True):
    """n freshly rendered frames with labels: (uint8 [n, 128, 128, 3], scene idx, multi-hot characters, framing idx)."""
    images, scenes, chars, framings = [], [], np.zeros((n, len(CHARACTER_IDS)), np.float32), []
    for i in range(n):
        shot = random_shot(rng, str(rng.choice(SCENE_IDS)), CHARACTER_IDS, float(rng.integers(3, 7)), int(rng.integers(2**31)))
        size = int(rng.choice([96, 128, 128, 160])) if augment else INPUT_SIZE
        frame = render_frame(shot, int(rng.integers(int(shot.duration * 8))), 8, (size, size))
        img = frame.image
        if size != INPUT_SIZE:
            img = np.asarray(_resize(img, INPUT_SIZE))
        images.append(img)
        scenes.append(SCENE_IDS.index(shot.scene))
        for cid in frame.visible:
            chars[i, CHARACTER_IDS.index(cid)] = 1
        framings.append(FRAMINGS.index(shot.framing))
    return np.stack(images), np.array(scenes), chars, np.array(framings)


def _resize(img: np.ndarray, size: int):
    return Image.fromarray(img).resize((size, size), Image.BILINEAR)


@torch.no_grad()
def evaluate_judge(model: Judge, samples: int = 2000, seed: int = 10_000_000) -> dict[str, float]:
    """Accuracy on fresh renders (the seed range is disjoint from training seeds)."""
    rng = np.random.default_rng(seed)
    hits = {"scene": 0, "characters_exact": 0, "framing": 0}
    done = 0
    while done < samples:
        n = min(100, samples - done)
        images, scenes, chars, framings = sample_batch(rng, n, augment=False)
        preds = model.predict(images)
        for p, s, c, f in zip(preds, scenes, chars, framings):
            hits["scene"] += p["scene"] == SCENE_IDS[s]
            hits["characters_exact"] += set(p["characters"]) == {CHARACTER_IDS[k] for k in np.nonzero(c)[0]}
            hits["framing"] += p["framing"] == FRAMINGS[f]
        done += n
    return {k: v / samples for k, v in hits.items()}


def judge_paths(inputs: list[Path]) -> list[str]:
    """Human-readable predictions for images, mp4 movies (one line per second) or generate-movie folders (per shot)."""
    judge, lines = load_judge(), []
    for path in inputs:
        if path.is_dir() and (path / "manifest.json").is_file():
            manifest = json.loads((path / "manifest.json").read_text())
            frames = np.stack([np.asarray(Image.open(path / s["keyframe"]).convert("RGB")) for s in manifest["shots"]])
            for s, p in zip(manifest["shots"], judge.predict(frames)):
                lines.append(f"{path} shot {s['index']} ({s['scene']}): {_fmt(p)}")
        elif path.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"):
            fps = frame_rate(path)
            sampled = [(i, f) for i, f in enumerate(read_frames(path)) if i % max(1, round(fps)) == 0]
            for (i, _), p in zip(sampled, judge.predict(np.stack([f for _, f in sampled]))):
                lines.append(f"{path} t={i / fps:.1f}s: {_fmt(p)}")
        elif path.is_file():
            try:
                img = np.asarray(Image.open(path).convert("RGB"))
            except Exception:
                raise UserError(f"{path}: expected an image, a movie or a generate-movie folder") from None
            lines.append(f"{path}: {_fmt(judge.predict(img[None])[0])}")
        else:
            raise UserError(f"{path}: expected an image, a movie or a generate-movie folder, found nothing there")
    return lines


def _fmt(p: dict) -> str:
    chars = ", ".join(p["characters"]) or "nobody"
    return f"scene={p['scene']} ({p['confidence']:.2f}) characters=[{chars}] framing={p['framing']}"
