"""The frame judge for a compositional world: from one frame it reads the scene, the framing, and for each visible
character (up to three, in slots ordered left to right by where their faces are) every attribute of its look.

Why attributes and not names: any combination of attributes is a character, so a judge that knows twelve people
cannot referee a story with a thirteenth. Reading the look also says *what* is wrong with a drawn character (the
hat, not the face). Given the story's cast, the judge matches slots to cast members (the assignment with the highest
likelihood), which is what "the right characters are in the shot" means for a movie; without a cast, each slot's
most likely attributes name a character (its catalogue id when it has one, else a composed "look:" id).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from moviedreamer.toyworld.judge_weights import frame_features, read_folder, save_half
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import ATTRIBUTES, CHARACTER_IDS, FACE_KINDS, FRAMINGS, SCENE_IDS, character, look_id, random_cast

INPUT_SIZE = 128
SLOTS = 3  # a shot shows at most three characters
# what a frame can show: girls and boys are drawn alike, so the judge reads a kind as person, robot or cat
JUDGED: dict[str, tuple[str, ...]] = {**ATTRIBUTES, "kind": ("person", "robot", "cat")}
ATTRIBUTE_SIZES = {k: len(v) for k, v in JUDGED.items()}


def drawn(c, key: str) -> str:
    """Character c's attribute `key` as a frame shows it (the judge's vocabulary, JUDGED)."""
    return FACE_KINDS[c.kind] if key == "kind" else getattr(c, key)
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "weights" / "toy" / "judge"
EVAL_SEED = 10_000_000  # far from the training streams (seeded by small integers)


class LookJudge(nn.Module):
    reads_looks = True  # predict() takes the story's cast and reports each character's attributes

    def __init__(self, width: int = 32, slot_hidden: int = 512):
        super().__init__()
        self.config = {"kind": "look", "width": width, "slot_hidden": slot_hidden, "input_size": INPUT_SIZE, "slots": SLOTS,
                       "scenes": SCENE_IDS, "framings": FRAMINGS, "attributes": {k: list(v) for k, v in JUDGED.items()}}
        self.features, out_channels = frame_features(width)
        feat = 2 * out_channels  # average- and max-pooled: max pooling keeps small faces in wide shots
        self.trunk = nn.Sequential(nn.Linear(feat, 256), nn.ReLU(inplace=True))
        self.scene = nn.Linear(256, len(SCENE_IDS))
        self.framing = nn.Linear(256, len(FRAMINGS))
        # slots need where things are: the 4 x 4 map, squeezed, flattened, beside the pooled features
        grid = INPUT_SIZE // 32
        self.squeeze = nn.Sequential(nn.Conv2d(out_channels, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.slots = nn.Sequential(nn.Linear(64 * grid * grid + feat, slot_hidden), nn.ReLU(inplace=True), nn.Dropout(0.1),
                                   nn.Linear(slot_hidden, SLOTS * (1 + sum(ATTRIBUTE_SIZES.values()))))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: float [B, 3, H, W] in [0, 1] (resized to the judge's input size here) -> logits: scene [B, S],
        framing [B, F], present [B, SLOTS], and per attribute [B, SLOTS, n_values]."""
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        x = self.features(images * 2 - 1)
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        h = self.trunk(pooled)
        s = self.slots(torch.cat([self.squeeze(x).flatten(1), pooled], dim=1)).view(x.shape[0], SLOTS, -1)
        out = {"scene": self.scene(h), "framing": self.framing(h), "present": s[..., 0]}
        start = 1
        for key, n in ATTRIBUTE_SIZES.items():
            out[key] = s[..., start:start + n]
            start += n
        return out

    @classmethod
    def from_state(cls, config: dict, state: dict) -> "LookJudge":
        model = cls(config["width"], config["slot_hidden"])
        model.load_state_dict(state)
        return model.eval()

    @torch.no_grad()
    def predict(self, frames: np.ndarray | torch.Tensor, cast: list[str] | None = None, batch: int = 64) -> list[dict]:
        """frames: uint8 [N, H, W, 3] -> [{"scene", "characters", "framing", "confidence", "looks"}]. With `cast`
        (character ids), "characters" are the cast members the slots match best; without, the ids their looks name.
        "looks": each present slot's most likely attributes, left to right."""
        self.eval()
        x = torch.from_numpy(np.array(frames, copy=True)).permute(0, 3, 1, 2).float() / 255
        cast_idx = _cast_indices(cast) if cast else None
        out = []
        for i in range(0, len(x), batch):
            logits = self(x[i : i + batch])
            scene_p = logits["scene"].softmax(-1)
            present = torch.sigmoid(logits["present"]) > 0.5
            logp = {k: logits[k].log_softmax(-1) for k in ATTRIBUTE_SIZES}
            for j in range(len(scene_p)):
                slots = [s for s in range(SLOTS) if present[j, s]]
                looks = [{k: JUDGED[k][int(logp[k][j, s].argmax())] for k in ATTRIBUTE_SIZES} for s in slots]
                if cast_idx is not None:
                    chars = _assign(slots, {k: v[j] for k, v in logp.items()}, cast, cast_idx)
                else:
                    chars = tuple(look_id({**look, "kind": "girl" if look["kind"] == "person" else look["kind"]}) for look in looks)
                out.append({"scene": SCENE_IDS[int(scene_p[j].argmax())], "characters": chars, "framing": FRAMINGS[int(logits["framing"][j].argmax())],
                            "confidence": round(float(scene_p[j].max()), 3), "looks": looks})
        return out


def _cast_indices(cast: list[str]) -> dict[str, torch.Tensor]:
    """Per attribute, the value index of every cast member: [len(cast)]."""
    chars = [character(c) for c in cast]
    return {k: torch.tensor([JUDGED[k].index(drawn(c, k)) for c in chars]) for k in ATTRIBUTE_SIZES}


def _assign(slots: list[int], logp: dict[str, torch.Tensor], cast: list[str], cast_idx: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The cast members (distinct) that the present slots show, by the highest total attribute log-likelihood."""
    if not slots:
        return ()
    score = sum(logp[k][slots][:, cast_idx[k]] for k in ATTRIBUTE_SIZES)  # [n_slots, n_cast]
    n = len(cast)
    if len(slots) > n:  # more people than the cast: match what can be matched
        slots = slots[:n]
        score = score[:n]
    best, best_perm = -float("inf"), None
    for perm in itertools.permutations(range(n), len(slots)):
        total = float(sum(score[i, c] for i, c in enumerate(perm)))
        if total > best:
            best, best_perm = total, perm
    return tuple(cast[c] for c in best_perm)


def slot_order(frame) -> list[str]:
    """The visible characters of a rendered frame, left to right by face centre (the judge's slot order)."""
    return sorted(frame.visible, key=lambda cid: frame.face_boxes[cid][0] + frame.face_boxes[cid][2])[:SLOTS]


def sample_batch(rng: np.random.Generator, n: int, augment: bool = True, composed: float = 0.75):
    """n freshly rendered frames and their labels: uint8 [n, 128, 128, 3] and a dict of int arrays: "scene",
    "framing", "present" [n, SLOTS], one [n, SLOTS] array per attribute (-1 where no one), plus "casts" (each
    shot's cast of three: the shot's characters are drawn from it) and "visible" (slot order).
    A `composed` share of the shots casts random compositional characters, the rest the catalogue."""
    images = np.zeros((n, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    lab = {"scene": np.zeros(n, np.int64), "framing": np.zeros(n, np.int64), "present": np.zeros((n, SLOTS), np.float32)}
    lab.update({k: np.full((n, SLOTS), -1, np.int64) for k in ATTRIBUTE_SIZES})
    casts, visible = [], []
    for i in range(n):
        if rng.random() < composed:
            cast = random_cast(rng, 3)
        else:
            cast = [str(c) for c in rng.choice(CHARACTER_IDS, 3, replace=False)]
        shot = random_shot(rng, str(rng.choice(SCENE_IDS)), cast, float(rng.integers(3, 7)), int(rng.integers(2**31)))
        size = int(rng.choice([96, 128, 128, 160])) if augment else INPUT_SIZE
        frame = render_frame(shot, int(rng.integers(int(shot.duration * 8))), 8, (size, size))
        img = frame.image if size == INPUT_SIZE else np.asarray(Image.fromarray(frame.image).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
        images[i] = img
        lab["scene"][i], lab["framing"][i] = SCENE_IDS.index(shot.scene), FRAMINGS.index(shot.framing)
        order = slot_order(frame)
        for s, cid in enumerate(order):
            lab["present"][i, s] = 1
            c = character(cid)
            for k in ATTRIBUTE_SIZES:
                lab[k][i, s] = JUDGED[k].index(drawn(c, k))
        casts.append(cast)
        visible.append(tuple(order))
    lab["casts"], lab["visible"] = casts, visible
    return images, lab


def judge_loss(out: dict[str, torch.Tensor], lab: dict) -> torch.Tensor:
    loss = F.cross_entropy(out["scene"], torch.from_numpy(lab["scene"])) + F.cross_entropy(out["framing"], torch.from_numpy(lab["framing"]))
    loss = loss + 2 * F.binary_cross_entropy_with_logits(out["present"], torch.from_numpy(lab["present"]))
    for k in ATTRIBUTE_SIZES:
        loss = loss + F.cross_entropy(out[k].flatten(0, 1), torch.from_numpy(lab[k]).flatten(), ignore_index=-1)
    return loss


@torch.no_grad()
def evaluate_look_judge(model: LookJudge, samples: int = 2000, seed: int = EVAL_SEED, composed: float = 1.0) -> dict[str, float]:
    """On fresh renders: scene, framing; "characters_exact" (the looks read == the visible characters' drawn looks),
    "characters_cast" (slots matched to the shot's cast of three == the visible set) and "attributes" (share of
    attributes read right on characters the judge found in the right slot)."""
    rng = np.random.default_rng(seed)
    hits = {"scene": 0, "framing": 0, "characters_exact": 0, "characters_cast": 0}
    attr_hits = attr_total = 0
    done = 0
    while done < samples:
        n = min(100, samples - done)
        images, lab = sample_batch(rng, n, augment=False, composed=composed)
        free = model.predict(images)
        for j in range(n):
            p = free[j]
            truth = set(lab["visible"][j])
            hits["scene"] += p["scene"] == SCENE_IDS[lab["scene"][j]]
            hits["framing"] += p["framing"] == FRAMINGS[lab["framing"][j]]
            hits["characters_exact"] += sorted(map(_key, p["looks"])) == sorted(_key({k: drawn(character(c), k) for k in ATTRIBUTE_SIZES}) for c in truth)
            hits["characters_cast"] += set(model.predict(images[j : j + 1], cast=lab["casts"][j])[0]["characters"]) == truth
            if len(p["looks"]) == len(lab["visible"][j]):
                for look, cid in zip(p["looks"], lab["visible"][j]):
                    c = character(cid)
                    attr_hits += sum(look[k] == drawn(c, k) for k in ATTRIBUTE_SIZES)
                    attr_total += len(ATTRIBUTE_SIZES)
        done += n
    return {**{k: v / samples for k, v in hits.items()}, "attributes": attr_hits / max(1, attr_total)}


def _key(look: dict) -> tuple:
    return tuple(look[k] for k in ATTRIBUTE_SIZES)


def save_look_judge(model: LookJudge, out_dir: str | Path, extra: dict | None = None) -> Path:
    return save_half(model, model.config, out_dir, extra)


def load_look_judge(path: str | Path | None = None) -> LookJudge:
    config, state = read_folder(Path(path) if path else DEFAULT_DIR, "the toy judge", "moviedreamer toyworld train-judge -o RUN")
    return LookJudge.from_state(config, state)
