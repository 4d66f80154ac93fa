"""What the compositional frame judge learns from and how it is scored: freshly rendered frames with every visible
face's centre, size and drawn attributes; the loss (scene, framing, a CenterNet-style focal loss on the face map,
and the attributes read from crops around the true faces, jittered the way found faces are off); and the figures
on fresh renders (where the judge finds the faces itself)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from moviedreamer.toyworld.look_judge import (
    ATTRIBUTE_SIZES,
    INPUT_SIZE,
    JUDGED,
    STRIDE,
    LookJudge,
    crop_boxes,
    drawn,
    slot_order,
)
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import (
    CHARACTER_IDS,
    FRAMINGS,
    SCENE_IDS,
    character,
    random_cast,
)

EVAL_SEED = 10_000_000  # far from the training streams (seeded by small integers)


def sample_batch(rng: np.random.Generator, n: int, augment: bool = True, composed: float = 0.75):
    """n freshly rendered frames and their labels: uint8 [n, 128, 128, 3] and a dict: "scene", "framing" (int [n]),
    "faces" (per frame a float [k, 3] of centre x, centre y, size in pixels, left to right), one int [sum k] array
    per attribute (the faces' drawn values, in the same order), "casts" (each shot's cast of three: the shot's
    characters are drawn from it) and "visible" (the characters, left to right).
    A `composed` share of the shots casts random compositional characters, the rest the catalogue."""
    images = np.zeros((n, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    lab = {"scene": np.zeros(n, np.int64), "framing": np.zeros(n, np.int64), "faces": [], "casts": [], "visible": []}
    attrs: dict[str, list[int]] = {k: [] for k in ATTRIBUTE_SIZES}
    for i in range(n):
        if rng.random() < composed:
            cast = random_cast(rng, 3)
        else:
            cast = [str(c) for c in rng.choice(CHARACTER_IDS, 3, replace=False)]
        shot = random_shot(rng, str(rng.choice(SCENE_IDS)), cast, float(rng.integers(3, 7)), int(rng.integers(2**31)))
        size = int(rng.choice([96, 128, 128, 160])) if augment else INPUT_SIZE
        frame = render_frame(shot, int(rng.integers(int(shot.duration * 8))), 8, (size, size))
        images[i] = frame.image if size == INPUT_SIZE else np.asarray(Image.fromarray(frame.image).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
        scale = INPUT_SIZE / size
        lab["scene"][i], lab["framing"][i] = SCENE_IDS.index(shot.scene), FRAMINGS.index(shot.framing)
        order = slot_order(frame)
        faces = np.zeros((len(order), 3), np.float32)
        for s, cid in enumerate(order):
            x0, y0, x1, y1 = frame.face_boxes[cid]
            faces[s] = ((x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale, max(x1 - x0, y1 - y0) * scale)
            c = character(cid)
            for k in ATTRIBUTE_SIZES:
                attrs[k].append(JUDGED[k].index(drawn(c, k)))
        lab["faces"].append(faces)
        lab["casts"].append(cast)
        lab["visible"].append(tuple(order))
    lab.update({k: np.asarray(v, np.int64) for k, v in attrs.items()})
    return images, lab


def face_targets(faces: list[np.ndarray], grid: int = INPUT_SIZE // STRIDE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The face map's targets: heat [B, G, G] (a Gaussian around each centre, 1 at its cell), and for every face
    its (batch, y, x) cell [n, 3] and regression target [n, 3] (log(size / 8), x and y offset within the cell)."""
    heat = torch.zeros(len(faces), grid, grid)
    ys, xs = torch.meshgrid(torch.arange(grid).float() + 0.5, torch.arange(grid).float() + 0.5, indexing="ij")
    cells, reg = [], []
    for b, fs in enumerate(faces):
        for cx, cy, size in fs:
            gx, gy = cx / STRIDE, cy / STRIDE
            sigma = max(0.7, size / STRIDE / 4)
            heat[b] = torch.maximum(heat[b], torch.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * sigma**2)))
            ix, iy = min(grid - 1, max(0, int(gx))), min(grid - 1, max(0, int(gy)))
            heat[b, iy, ix] = 1.0
            cells.append((b, iy, ix))
            reg.append((float(np.log(max(size, 1.0) / 8)), min(0.999, max(0.001, gx - ix)), min(0.999, max(0.001, gy - iy))))
    return heat, torch.tensor(cells, dtype=torch.long).view(-1, 3), torch.tensor(reg).view(-1, 3)


def jittered_crops(faces: list[np.ndarray], gen: torch.Generator | None) -> list[torch.Tensor]:
    """Crop boxes around the true faces, moved and scaled a little (when gen is given) as found faces are."""
    out = []
    for fs in faces:
        t = torch.from_numpy(fs).view(-1, 3)
        centres, sizes = t[:, :2].clone(), t[:, 2].clone()
        if gen is not None and len(t):
            centres += (torch.rand(len(t), 2, generator=gen) - 0.5) * 0.2 * sizes[:, None]
            sizes *= torch.exp((torch.rand(len(t), generator=gen) - 0.5) * 0.3)
        out.append(crop_boxes(centres, sizes))
    return out


def judge_loss(model: LookJudge, images: torch.Tensor, lab: dict, gen: torch.Generator | None = None) -> torch.Tensor:
    """images: the judge's input [B, 3, 128, 128] in [-1, 1]."""
    scan = model.scan(images)
    loss = F.cross_entropy(scan["scene"], torch.from_numpy(lab["scene"])) + F.cross_entropy(scan["framing"], torch.from_numpy(lab["framing"]))
    heat, cells, reg = face_targets(lab["faces"])
    n = max(1, len(cells))
    p = torch.sigmoid(scan["faces"][:, 0]).clamp(1e-4, 1 - 1e-4)
    pos = heat == 1
    focal = -(torch.where(pos, (1 - p) ** 2 * p.log(), (1 - heat) ** 4 * p**2 * (1 - p).log())).sum() / n
    loss = loss + focal
    if len(cells):
        at = scan["faces"][cells[:, 0], :, cells[:, 1], cells[:, 2]]  # [n, 4]
        loss = loss + F.l1_loss(at[:, 1], reg[:, 0]) + F.binary_cross_entropy_with_logits(at[:, 2:], reg[:, 1:])
        logits = model.read(images, jittered_crops(lab["faces"], gen))
        loss = loss + sum(F.cross_entropy(logits[k], torch.from_numpy(lab[k])) for k in ATTRIBUTE_SIZES)
    return loss


@torch.no_grad()
def evaluate_look_judge(model: LookJudge, samples: int = 2000, seed: int = EVAL_SEED, composed: float = 1.0) -> dict[str, float]:
    """On fresh renders, the judge finding faces itself: scene, framing, "count" (as many faces found as are
    visible), "characters_exact" (the looks read == the visible characters' drawn looks), "characters_cast"
    (faces matched to the shot's cast of three == the visible set), "attributes" (share read right, over frames
    where the count is right, face by face left to right) and the same per attribute ("attr_<name>")."""
    rng = np.random.default_rng(seed)
    hits = {"scene": 0, "framing": 0, "count": 0, "characters_exact": 0, "characters_cast": 0}
    per_attr = {k: 0 for k in ATTRIBUTE_SIZES}
    faces_read = 0
    done = 0
    while done < samples:
        n = min(100, samples - done)
        images, lab = sample_batch(rng, n, augment=False, composed=composed)
        preds = model.predict(images, cast=lab["casts"])  # looks do not depend on the cast; "characters" are matched to it
        for j in range(n):
            p, order = preds[j], lab["visible"][j]
            truth = [{k: drawn(character(c), k) for k in ATTRIBUTE_SIZES} for c in order]
            hits["scene"] += p["scene"] == SCENE_IDS[lab["scene"][j]]
            hits["framing"] += p["framing"] == FRAMINGS[lab["framing"][j]]
            hits["count"] += len(p["looks"]) == len(order)
            hits["characters_exact"] += sorted(map(_key, p["looks"])) == sorted(map(_key, truth))
            hits["characters_cast"] += set(p["characters"]) == set(order)
            if len(p["looks"]) == len(order):
                for look, t in zip(p["looks"], truth):
                    faces_read += 1
                    for k in ATTRIBUTE_SIZES:
                        per_attr[k] += look[k] == t[k]
        done += n
    out = {k: v / samples for k, v in hits.items()}
    out["attributes"] = sum(per_attr.values()) / max(1, faces_read * len(per_attr))
    out.update({f"attr_{k}": v / max(1, faces_read) for k, v in per_attr.items()})
    return out


def _key(look: dict) -> tuple:
    return tuple(look[k] for k in ATTRIBUTE_SIZES)
