"""The frame judge for a compositional world: from one frame it reads the scene, the framing, and for each visible
character (up to three, left to right by where their faces are) every attribute of its look.

Why attributes and not names: any combination of attributes is a character, so a judge that knows twelve people
cannot referee a story with a thirteenth. Reading the look also says *what* is wrong with a drawn character (the
hat, not the face). Given the story's cast, the judge matches what it found to cast members (the assignment with
the highest likelihood), which is what "the right characters are in the shot" means for a movie; without a cast,
each character's most likely attributes name it (its catalogue id when it has one, else a composed "look:" id).

Why it finds faces first and reads a crop: in a wide shot a face is a dozen pixels and its eyes one or two, so a
reader that sees the whole frame through a 4 x 4 map has lost them before it starts. The judge marks face centres
on a fine grid (a heat map, with each face's size), cuts each face with its hat and clothes out of the frame at the
frame's own resolution (torchvision's roi_align), and reads the attributes from that crop.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from moviedreamer.toyworld.judge_weights import frame_features, read_folder, save_half
from moviedreamer.toyworld.world import (
    ATTRIBUTES,
    COMPOSED_PREFIX,
    FACE_KINDS,
    FRAMINGS,
    SCENE_IDS,
    character,
    look_id,
)

INPUT_SIZE = 128
SLOTS = 3  # a shot shows at most three characters
STRIDE = 4  # face centres are marked on a 32 x 32 grid
CROP = (48, 32)  # the attribute reader's input (height, width) in pixels: a face with its hat and clothes
# what a frame can show: girls and boys are drawn alike, so the judge reads a kind as person, robot or cat
JUDGED: dict[str, tuple[str, ...]] = {**ATTRIBUTES, "kind": ("person", "robot", "cat")}
ATTRIBUTE_SIZES = {k: len(v) for k, v in JUDGED.items()}
PEAK = 0.3  # a heat-map peak above this is a face
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "weights" / "toy" / "judge"


def drawn(c, key: str) -> str:
    """Character c's attribute `key` as a frame shows it (the judge's vocabulary, JUDGED)."""
    return FACE_KINDS[c.kind] if key == "kind" else getattr(c, key)


def crop_boxes(centres: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Face centres [N, 2] and sizes [N] (pixels) -> the box around each face with its hat above and its clothes
    below, narrow enough to leave out the neighbours, [N, 4] as x0, y0, x1, y1."""
    cx, cy = centres[:, 0], centres[:, 1]
    return torch.stack([cx - sizes, cy - 1.1 * sizes, cx + sizes, cy + 1.9 * sizes], dim=1)


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class LookJudge(nn.Module):
    reads_looks = True  # predict() takes the story's cast and reports each character's attributes

    def __init__(self, width: int = 32, reader_width: int = 32):
        super().__init__()
        self.config = {"kind": "look", "version": 3, "width": width, "reader_width": reader_width, "input_size": INPUT_SIZE, "slots": SLOTS,
                       "scenes": SCENE_IDS, "framings": FRAMINGS, "attributes": {k: list(v) for k, v in JUDGED.items()}}
        self.features, out_channels = frame_features(width)
        feat = 2 * out_channels  # average- and max-pooled
        self.trunk = nn.Sequential(nn.Linear(feat, 256), nn.ReLU(inplace=True))
        self.scene = nn.Linear(256, len(SCENE_IDS))
        self.framing = nn.Linear(256, len(FRAMINGS))
        # the locator: stride 4, 8 and 16 features (what is there, and what is around it) merged on the fine grid
        self.taps = {8: 0, 14: 1, 20: 2}  # index in self.features after which the map is at stride 4, 8, 16
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (width, 2 * width, 4 * width))
        self.locate = nn.Sequential(*_conv(width, width), nn.Conv2d(width, 4, 1))  # heat logit, log size, x and y offset
        nn.init.constant_(self.locate[-1].bias[:1], -4.0)  # most cells are not a face centre
        r = reader_width
        self.reader = nn.Sequential(*_conv(3, r, 2), *_conv(r, r), *_conv(r, 2 * r, 2), *_conv(2 * r, 2 * r), *_conv(2 * r, 4 * r, 2),
                                    nn.Flatten(), nn.Linear(4 * r * (CROP[0] // 8) * (CROP[1] // 8), 256), nn.ReLU(inplace=True), nn.Dropout(0.1),
                                    nn.Linear(256, sum(ATTRIBUTE_SIZES.values())))

    def scan(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: float [B, 3, 128, 128] in [-1, 1] -> scene [B, S], framing [B, F] logits and the face map
        [B, 4, 32, 32] (heat logit, log(size / 8), x and y offset logits within the cell)."""
        x, taps = images, []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                taps.append(x)
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        h = self.trunk(pooled)
        grid = taps[0].shape[-2:]
        merged = sum(F.interpolate(lat(t), size=grid, mode="bilinear", align_corners=False) if t.shape[-2:] != grid else lat(t)
                     for lat, t in zip(self.lateral, taps))
        return {"scene": self.scene(h), "framing": self.framing(h), "faces": self.locate(F.relu(merged))}

    def read(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The attribute logits of the crops `boxes` (per image [n_i, 4] in pixels of the 128-px input), in order:
        per attribute [sum n_i, n_values]."""
        crops = roi_align(images, [b.float() for b in boxes], output_size=CROP, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        logits = self.reader(crops)
        out, start = {}, 0
        for key, n in ATTRIBUTE_SIZES.items():
            out[key] = logits[:, start:start + n]
            start += n
        return out

    @staticmethod
    def find_faces(face_map: torch.Tensor, threshold: float = PEAK) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The face map [B, 4, G, G] -> per image (centres [n, 2], sizes [n]) of at most SLOTS faces, left to right."""
        heat = torch.sigmoid(face_map[:, 0])
        peaks = (heat == F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0]) & (heat > threshold)
        out = []
        for b in range(face_map.shape[0]):
            ys, xs = torch.nonzero(peaks[b], as_tuple=True)
            if len(ys) > SLOTS:
                keep = heat[b, ys, xs].topk(SLOTS).indices
                ys, xs = ys[keep], xs[keep]
            off = torch.sigmoid(face_map[b, 2:, ys, xs])
            centres = torch.stack([(xs + off[0]) * STRIDE, (ys + off[1]) * STRIDE], dim=1).float()
            sizes = 8 * face_map[b, 1, ys, xs].exp()
            order = centres[:, 0].argsort()
            out.append((centres[order], sizes[order]))
        return out

    @classmethod
    def from_state(cls, config: dict, state: dict) -> LookJudge:
        model = cls(config["width"], config["reader_width"])
        model.load_state_dict(state)
        return model.eval()

    @torch.no_grad()
    def predict(self, frames: np.ndarray | torch.Tensor, cast: list[str] | list[list[str]] | None = None, batch: int = 64) -> list[dict]:
        """frames: uint8 [N, H, W, 3] -> [{"scene", "characters", "framing", "confidence", "looks"}]. With `cast`
        (character ids; or one list per frame), "characters" are the cast members the faces found match best;
        without, the ids their looks name. "looks": each face's most likely attributes, left to right."""
        self.eval()
        x = torch.from_numpy(np.array(frames, copy=True)).permute(0, 3, 1, 2).float() / 255
        casts = None
        if cast:
            casts = list(cast) if not isinstance(cast[0], str) else [cast] * len(x)
            if len(casts) != len(x):
                raise ValueError(f"predict: {len(casts)} casts for {len(x)} frames")
        indices: dict[tuple, dict] = {}
        out = []
        for i in range(0, len(x), batch):
            images = to_input(x[i : i + batch])
            scan = self.scan(images)
            found = self.find_faces(scan["faces"])
            logits = self.read(images, [crop_boxes(c, s) for c, s in found])
            logp = {k: v.log_softmax(-1) for k, v in logits.items()}
            scene_p = scan["scene"].softmax(-1)
            first = 0
            for j, (centres, _) in enumerate(found):
                rows = list(range(first, first + len(centres)))
                first += len(centres)
                looks = [{k: JUDGED[k][int(logp[k][r].argmax())] for k in ATTRIBUTE_SIZES} for r in rows]
                if casts is not None:
                    members = list(casts[i + j])
                    key = tuple(members)
                    if key not in indices:
                        indices[key] = _cast_indices(members)
                    chars = _assign(rows, logp, members, indices[key])
                else:
                    chars = tuple(name_look(look) for look in looks)
                out.append({"scene": SCENE_IDS[int(scene_p[j].argmax())], "characters": chars, "framing": FRAMINGS[int(scan["framing"][j].argmax())],
                            "confidence": round(float(scene_p[j].max()), 3), "looks": looks})
        return out


def name_look(look: dict[str, str]) -> str:
    """The id a look read from a frame names: the catalogue character with exactly these attributes (a person is a
    girl or a boy: a frame cannot tell), else the composed id (a person written as a girl)."""
    kinds = ("girl", "boy") if look["kind"] == "person" else (look["kind"],)
    ids = [look_id({**look, "kind": k}) for k in kinds]
    return next((i for i in ids if not i.startswith(COMPOSED_PREFIX)), ids[0])


def to_input(x: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] -> the judge's input: 128 x 128 in [-1, 1]."""
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x * 2 - 1


def _cast_indices(cast: list[str]) -> dict[str, torch.Tensor]:
    """Per attribute, the value index of every cast member: [len(cast)]."""
    chars = [character(c) for c in cast]
    return {k: torch.tensor([JUDGED[k].index(drawn(c, k)) for c in chars]) for k in ATTRIBUTE_SIZES}


def _assign(rows: list[int], logp: dict[str, torch.Tensor], cast: list[str], cast_idx: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The cast members (distinct) that the faces `rows` of logp show, by the highest total attribute log-likelihood."""
    if not rows:
        return ()
    score = sum(logp[k][rows][:, cast_idx[k]] for k in ATTRIBUTE_SIZES)  # [n_faces, n_cast]
    n = len(cast)
    if len(rows) > n:  # more people than the cast: match what can be matched
        score = score[:n]
    best, best_perm = -float("inf"), None
    for perm in itertools.permutations(range(n), min(len(rows), n)):
        total = float(sum(score[i, c] for i, c in enumerate(perm)))
        if total > best:
            best, best_perm = total, perm
    return tuple(cast[c] for c in best_perm)


def slot_order(frame) -> list[str]:
    """The visible characters of a rendered frame, left to right by face centre (the judge's order)."""
    return sorted(frame.visible, key=lambda cid: frame.face_boxes[cid][0] + frame.face_boxes[cid][2])[:SLOTS]


def save_look_judge(model: LookJudge, out_dir: str | Path, extra: dict | None = None) -> Path:
    return save_half(model, model.config, out_dir, extra)


def load_look_judge(path: str | Path | None = None) -> LookJudge:
    config, state = read_folder(Path(path) if path else DEFAULT_DIR, "the toy judge", "moviedreamer toyworld train-judge -o RUN")
    return LookJudge.from_state(config, state)
