"""The action judge: a small spatio-temporal CNN, trained only on rendered toy-world clips, that says from a
clip of 8-16 frames which action the characters perform (and which way walkers and runners go) and how the
camera moves. The frame judge cannot referee motion: a single frame shows neither a pan nor a walk.

Why it reads motion and not pixels: every pair of consecutive frames enters as (frame, difference to the
next frame), so a clip in which nothing moves has all-zero differences. The toy camera follows walkers and
runners, so a walk shows up as the world scrolling behind characters that stay put (plus stepping legs);
direction is where the characters go relative to the world. Training adds noise, blur and colour jitter and
cuts clips of random length at random offsets, so softer generated clips are read the same way.

Still clips (one frame repeated, the "slideshow" baseline) are labelled with what a still clip truly shows
in this world: nothing moves, so stand and a static camera; except for the one pose that the renderer itself
holds still -- a character seated after the first second of "sit" (a rendered sit shot IS a still clip from then
on, so no judge can tell them apart). A turning character looks around the whole shot, so a turn always moves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from moviedreamer.toyworld.judge_weights import read_folder, save_half
from moviedreamer.toyworld.render import _facing, render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import (
    ACTIONS,
    CHARACTER_IDS,
    DIRECTED_ACTIONS,
    MOVES,
    SCENE_IDS,
    random_cast,
)

FPS = 8
RENDER_SIZE = 128  # the pipeline's clip resolution; the model reads it downsampled to `input_size`
DIRECTIONS = ["left", "right"]
FACINGS = ["left", "front", "right"]
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "weights" / "toy" / "action_judge"
EVAL_SEED = 70_000_000  # far from the training streams (seeded by small integers)


def _cbr(cin: int, cout: int, stride: int, dims: int = 2) -> list[nn.Module]:
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    return [conv(cin, cout, 3, stride, 1, bias=False), bn(cout), nn.ReLU(inplace=True)]


class ActionJudge(nn.Module):
    def __init__(self, width: int = 32, input_size: int = 64, hidden: int = 192, stem: str = "half", look: int = 0):
        super().__init__()
        if stem not in ("fold", "half"):
            raise ValueError(f"stem: expected fold or half, found {stem!r}")
        self.config = {"width": width, "input_size": input_size, "hidden": hidden, "stem": stem, "look": look, "fps": FPS, "render_size": RENDER_SIZE,
                       "actions": ACTIONS, "directions": DIRECTIONS, "moves": MOVES}
        self.input_size, self.stem = input_size, stem
        self.read_size = 2 * input_size if stem == "fold" else input_size  # "half" reads frames at the input size
        w = width
        # per frame pair: (frame at full resolution, folded 2x2 into 12 channels: a face turning in a wide shot
        # moves the eyes by about a pixel; 4 x the difference to the next frame at half resolution)
        # -> features on an (input_size / 8) grid. stem "half": (frame, 4 x difference) both at the input size
        self.pair = nn.Sequential(*_cbr(15 if stem == "fold" else 6, 3 * w // 4, 2), *_cbr(3 * w // 4, 5 * w // 4, 2), *_cbr(5 * w // 4, 2 * w, 2))
        # across time (and space, so that motion of characters and of the world can be compared)
        self.temporal = nn.Sequential(*_cbr(2 * w, 2 * w, (1, 2, 2), 3), *_cbr(2 * w, 2 * w, 1, 3))
        grid = input_size // 16
        # mean and max over time, kept on the spatial grid: where things are (feet vs horizon) tells sit from stand
        # the clip's last frame at full resolution through a deeper 2D CNN: poses held still (facing right after a
        # turn, seated) are appearance, read like the frame judge reads faces (0: no such branch)
        c = look
        self.look = nn.Sequential(*_cbr(3, c // 2, 2), *_cbr(c // 2, c, 2), *_cbr(c, c, 1), *_cbr(c, 2 * c, 2), *_cbr(2 * c, 2 * c, 1),
                                  *_cbr(2 * c, 3 * c, 2)) if look else None
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * grid * grid + 6 * look, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1))
        self.action = nn.Linear(hidden, len(ACTIONS))
        self.direction = nn.Linear(hidden, len(DIRECTIONS))
        self.move = nn.Linear(hidden, len(MOVES))
        # training aid: which way the last frame's characters face (left, front, right) -- every clip shows a
        # face, so the subtle cue that separates a finished turn from a stand is learnt from all of them
        self.facing = nn.Linear(6 * look, len(FACINGS)) if look else None

    def prepare(self, clips: torch.Tensor) -> torch.Tensor:
        """float [B, T, 3, H, W] in [0, 1] -> the same at the size forward reads (antialiased resize)."""
        b, t = clips.shape[:2]
        size = self.read_size
        if clips.shape[-2:] != (size, size):
            x = clips.reshape(b * t, *clips.shape[2:])
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            clips = x.reshape(b, t, 3, size, size)
        return clips

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """clips: float [B, T, 3, H, W] in [0, 1], T >= 2 (resized to twice the input size here: 128 by default)."""
        x = self.prepare(clips)
        b, t = x.shape[:2]
        if self.stem == "half":
            return self._rest(torch.cat([x[:, :-1] * 2 - 1, 4 * (x[:, 1:] - x[:, :-1])], dim=2).flatten(0, 1), x[:, -1], b, t)
        half = F.avg_pool2d(x.flatten(0, 1), 2).reshape(b, t, 3, self.input_size, self.input_size)
        frames = F.pixel_unshuffle(x[:, :-1].flatten(0, 1), 2) * 2 - 1
        return self._rest(torch.cat([frames, 4 * (half[:, 1:] - half[:, :-1]).flatten(0, 1)], dim=1), x[:, -1], b, t)

    def _rest(self, pairs: torch.Tensor, last: torch.Tensor, b: int, t: int) -> dict[str, torch.Tensor]:
        h = self.pair(pairs)
        h = h.reshape(b, t - 1, *h.shape[1:]).transpose(1, 2)  # [B, C, T-1, g, g]
        h = self.temporal(h)
        h = torch.cat([h.mean(2), h.amax(2)], dim=1).flatten(1)
        out = {}
        if self.look is not None:
            a = self.look(last * 2 - 1)
            a = torch.cat([a.mean((2, 3)), a.amax((2, 3))], dim=1)
            h, out["facing"] = torch.cat([h, a], dim=1), self.facing(a)
        h = self.trunk(h)
        return {"action": self.action(h), "direction": self.direction(h), "move": self.move(h), **out}


def save_action_judge(model: ActionJudge, out_dir: str | Path, extra: dict | None = None) -> Path:
    return save_half(model, model.config, out_dir, extra)


def load_action_judge(path: str | Path | None = None) -> ActionJudge:
    config, state = read_folder(Path(path) if path else DEFAULT_DIR, "the toy action judge", "python -m moviedreamer.train.fit_action_judge --out DIR")
    model = ActionJudge(config["width"], config["input_size"], config["hidden"], config.get("stem", "half"), config.get("look", 0))
    model.load_state_dict(state)
    return model.eval()


def still_label(shot, frame: int) -> str:
    """The truth of a clip that repeats frame `frame` of `shot`: the action a rendered still clip with that
    pose has (seated: sit), else stand."""
    if shot.action == "sit" and frame / FPS >= 1.0:
        return "sit"
    return "stand"


def sample_clips(rng: np.random.Generator, n: int, frames_range: tuple[int, int] = (8, 16), augment: bool = True, size: int = RENDER_SIZE,
                 composed: float = 0.0, still_share: float = 0.12):
    """n freshly rendered clips of one random length T in frames_range (inclusive), each from a random shot
    (scene, 1-3 characters, framing, move, layout, 3-6 s at 8 fps) at a random start offset.
    Returns (uint8 [n, T, size, size, 3], labels): labels has int arrays "action", "direction" (-1 where the
    clip has none), "move", "still" (1 for a repeated frame), "facing" (FACINGS index of the last frame's
    characters), and "shots", "start" (first frame index).
    With augment, some clips start on the shot's first frame and some are one frame repeated (see still_label).
    A `composed` share of the shots casts random compositional characters (the rest: the catalogue); with augment,
    a `still_share` of the clips are stills."""
    t_len = int(rng.integers(frames_range[0], frames_range[1] + 1))
    clips = np.zeros((n, t_len, size, size, 3), np.uint8)
    lab = {k: np.zeros(n, np.int64) for k in ("action", "direction", "move", "still", "start", "facing")}
    shots = []
    for i in range(n):
        cast = random_cast(rng, 3) if composed > 0 and rng.random() < composed else CHARACTER_IDS
        shot = random_shot(rng, str(rng.choice(SCENE_IDS)), cast, float(rng.integers(3, 7)), int(rng.integers(2**31)))
        total = round(shot.duration * FPS)
        start = 0 if augment and rng.random() < 0.2 else int(rng.integers(0, total - t_len + 1))
        still = augment and rng.random() < still_share
        if still:
            k = start + int(rng.integers(t_len))
            clips[i] = render_frame(shot, k, FPS, (size, size)).image
            action, direction, move = still_label(shot, k), -1, "static"
        else:
            k = start + t_len - 1
            for j in range(t_len):
                clips[i, j] = render_frame(shot, start + j, FPS, (size, size)).image
            action, move = shot.action, shot.move
            direction = DIRECTIONS.index(shot.direction) if shot.direction else -1
        lab["action"][i], lab["direction"][i], lab["move"][i] = ACTIONS.index(action), direction, MOVES.index(move)
        lab["still"][i], lab["start"][i] = int(still), start
        face = _facing(shot, k / FPS)
        lab["facing"][i] = 0 if face < -1 / 3 else 2 if face > 1 / 3 else 1
        shots.append(shot)
    lab["shots"] = shots
    return clips, lab


def to_tensor(clips: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, T, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 1, 4, 2, 3).float() / 255


@torch.no_grad()
def predict_clips(model: ActionJudge, clips: np.ndarray | torch.Tensor) -> list[dict]:
    """clips: uint8 [B, T, H, W, 3] (T >= 2, same T for all) or float [B, T, 3, H, W] in [0, 1] -> one
    dict per clip: action, direction (None unless the action is walk/run), move, probabilities."""
    model.eval()
    x = clips if isinstance(clips, torch.Tensor) and clips.is_floating_point() else to_tensor(np.asarray(clips))
    out = model(x)
    names = {"action": ACTIONS, "direction": DIRECTIONS, "move": MOVES}
    probs = {k: out[k].softmax(-1) for k in names}
    result = []
    for i in range(x.shape[0]):
        p = {k: {name: round(float(v), 4) for name, v in zip(names[k], probs[k][i])} for k in names}
        action = ACTIONS[int(probs["action"][i].argmax())]
        direction = DIRECTIONS[int(probs["direction"][i].argmax())] if action in DIRECTED_ACTIONS else None
        result.append({"action": action, "direction": direction, "move": MOVES[int(probs["move"][i].argmax())], "probabilities": p})
    return result


def predict_clip(model: ActionJudge, frames: np.ndarray) -> dict:
    """frames: uint8 [T, H, W, 3], T >= 2 (8-16 frames at 8 fps is what it was trained on)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 2 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames as uint8 [T >= 2, H, W, 3], found shape {frames.shape}")
    return predict_clips(model, frames[None])[0]


def degrade(x: torch.Tensor, noise: float, blur: bool, gen: torch.Generator) -> torch.Tensor:
    """float [B, T, 3, H, W]: a blur (half-resolution round trip) and Gaussian noise of std `noise`."""
    if blur:
        y = x.flatten(0, 1)
        y = F.interpolate(F.interpolate(y, scale_factor=0.5, mode="bilinear", antialias=True), size=y.shape[-2:], mode="bilinear")
        x = y.reshape(x.shape)
    if noise > 0:
        x = x + torch.randn(x.shape, generator=gen) * noise
    return x.clamp(0, 1)


@torch.no_grad()
def evaluate_action_judge(model: ActionJudge, samples: int = 2000, seed: int = EVAL_SEED, mode: str = "clip", noise: float = 0.0,
                          blur: bool = False, batch: int = 50, frames_range: tuple[int, int] = (8, 16), composed: float = 0.0) -> dict:
    """Accuracies on `samples` fresh rendered clips (the seed is far from training seeds): action, direction
    (over walk/run clips), move, with confusion matrices (rows: truth, columns: prediction).
    mode "clip": the clips as rendered; "slideshow": each clip's first frame repeated; "keyframe": the shot's
    first frame repeated (what a keyframe-only generator shows); "opening": the shot's first frames (where a
    sit or a turn happens: what the video referee reads). For stills, `true_action_non_stand` is the
    share of non-stand clips read as their shot's action, and `stand_static` the share read as stand + static."""
    model.eval()
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    conf_a = np.zeros((len(ACTIONS), len(ACTIONS)), np.int64)
    conf_m = np.zeros((len(MOVES), len(MOVES)), np.int64)
    dir_hits = dir_n = stand_static = 0
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        clips, lab = sample_clips(rng, n, frames_range, augment=False, composed=composed)
        if mode == "slideshow":
            clips = np.repeat(clips[:, :1], clips.shape[1], axis=1)
        elif mode == "keyframe":
            first = np.stack([render_frame(s, 0, FPS, clips.shape[2:4][::-1]).image for s in lab["shots"]])
            clips = np.repeat(first[:, None], clips.shape[1], axis=1)
        elif mode == "opening":
            clips = np.stack([[render_frame(s, j, FPS, clips.shape[2:4][::-1]).image for j in range(clips.shape[1])] for s in lab["shots"]])
        elif mode != "clip":
            raise ValueError(f"mode: expected clip, opening, slideshow or keyframe, found {mode!r}")
        out = model(degrade(to_tensor(clips), noise, blur, gen))
        pa, pd, pm = (out[k].argmax(-1).numpy() for k in ("action", "direction", "move"))
        np.add.at(conf_a, (lab["action"], pa), 1)
        np.add.at(conf_m, (lab["move"], pm), 1)
        directed = lab["direction"] >= 0
        dir_hits += int((pd[directed] == lab["direction"][directed]).sum())
        dir_n += int(directed.sum())
        stand_static += int(((pa == ACTIONS.index("stand")) & (pm == MOVES.index("static"))).sum())
        done += n
    non_stand = np.arange(len(ACTIONS)) != ACTIONS.index("stand")
    return {
        "samples": samples, "mode": mode, "noise": noise, "blur": blur,
        "action": float(np.trace(conf_a) / samples), "direction": dir_hits / max(dir_n, 1), "move": float(np.trace(conf_m) / samples),
        "directed_clips": dir_n, "stand_static": stand_static / samples,
        "true_action_non_stand": float(np.diag(conf_a)[non_stand].sum() / max(conf_a[non_stand].sum(), 1)),
        "per_action": {a: float(conf_a[i, i] / max(conf_a[i].sum(), 1)) for i, a in enumerate(ACTIONS)},
        "confusion_action": conf_a.tolist(), "confusion_move": conf_m.tolist(),
    }
