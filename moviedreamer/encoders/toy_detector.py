"""The toy face detector: a small fully-convolutional net with SCRFD's ONNX contract, so that insightface's own
SCRFD code (`model_zoo.get_model` → `SCRFD.detect`: anchors, distance decoding, NMS) runs it like a real pack.

SCRFD's contract (insightface 2.1, `model_zoo/scrfd.py`), 9 outputs: scores, box distances and 5-landmark offsets
for strides 8, 16, 32 with 2 anchors per cell, each [cells x 2, C] for one image (C = 1, 4, 10). Anchor points are
cell corners (x * stride, y * stride); boxes are (left, top, right, bottom) distances and landmarks (dx, dy)
offsets from the anchor point, in stride units; the input is RGB, (pixel - 127.5) / 128. The toy net predicts at
stride 8 only (toy faces are 6–80 px in 128-px frames): its stride-16/32 scores are zero.

Toy faces have no annotated landmarks: `box_landmarks` places the 5 points where insightface's ArcFace template
has them relative to the crop, so `norm_crop` of a detection is (about) its box, and the recognizer is trained on
exactly the crops detection + alignment produce.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 8
ANCHORS = 2
# insightface's ArcFace alignment template (face_align.arcface_dst) divided by its 112-px crop size
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32) / 112.0
INPUT_MEAN, INPUT_STD = 127.5, 128.0


def box_landmarks(box) -> np.ndarray:
    """[x0, y0, x1, y1] → [5, 2] points placed as the ArcFace template places them in a square crop of the box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    return np.stack([cx + (TEMPLATE[:, 0] - 0.5) * side, cy + (TEMPLATE[:, 1] - 0.5) * side], 1).astype(np.float32)


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ToyFaceDetector(nn.Module):
    """[B, 3, H, W] normalised RGB → per stride-8 cell: score logit, 4 box distances, 10 landmark offsets."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.config = {"width": width}
        w = width
        self.down8 = nn.Sequential(_conv(3, w // 2, 2), _conv(w // 2, w, 2), _conv(w, w), _conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        self.down16 = nn.Sequential(_conv(2 * w, 2 * w, 2), _conv(2 * w, 2 * w), _conv(2 * w, 2 * w))  # context for big faces
        self.head = nn.Sequential(_conv(4 * w, 2 * w), nn.Conv2d(2 * w, 1 + 4 + 10, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8 = self.down8(x)
        f16 = F.interpolate(self.down16(f8), size=f8.shape[-2:], mode="nearest")
        return self.head(torch.cat([f8, f16], 1))  # [B, 15, H/8, W/8]


def targets(boxes_per_image: list[list], size: tuple[int, int], min_face: float = 6.0):
    """Training targets on the stride-8 grid: positive cells are anchor points in the central part of a face box
    (|dx| <= max(4, 0.3 w), |dy| <= max(4, 0.3 h), the nearest point always); a point claimed by two faces goes to the
    smaller. Returns (labels [B, h, w] float, box distances [B, 4, h, w], landmark offsets [B, 10, h, w])."""
    W, H = size
    gh, gw = H // STRIDE, W // STRIDE
    ys, xs = np.mgrid[:gh, :gw].astype(np.float32) * STRIDE
    labels = np.zeros((len(boxes_per_image), gh, gw), np.float32)
    dist = np.zeros((len(boxes_per_image), 4, gh, gw), np.float32)
    kps = np.zeros((len(boxes_per_image), 10, gh, gw), np.float32)
    for b, boxes in enumerate(boxes_per_image):
        area = np.full((gh, gw), np.inf, np.float32)
        for box in sorted(boxes, key=lambda bx: -(bx[2] - bx[0]) * (bx[3] - bx[1])):  # big first: small ones overwrite
            x0, y0, x1, y1 = box
            w, h = x1 - x0, y1 - y0
            if min(w, h) < min_face:
                continue
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            pos = (np.abs(xs - cx) <= max(4, 0.3 * w)) & (np.abs(ys - cy) <= max(4, 0.3 * h))
            ny, nx = int(np.clip(round(cy / STRIDE), 0, gh - 1)), int(np.clip(round(cx / STRIDE), 0, gw - 1))
            pos[ny, nx] = True
            pos &= w * h <= area
            area[pos] = w * h
            labels[b][pos] = 1
            d = np.stack([xs - x0, ys - y0, x1 - xs, y1 - ys]) / STRIDE
            dist[b][:, pos] = d[:, pos]
            lm = box_landmarks(box)
            off = np.concatenate([np.stack([lm[k, 0] - xs, lm[k, 1] - ys]) for k in range(5)]) / STRIDE
            kps[b][:, pos] = off[:, pos]
    return torch.from_numpy(labels), torch.from_numpy(dist), torch.from_numpy(kps)


def detector_loss(out: torch.Tensor, labels, dist, kps, pos_weight: float = 4.0):
    """BCE on every cell (positives weighted) + L1 on box distances and landmarks of the positive cells."""
    logit, box, lm = out[:, 0], out[:, 1:5], out[:, 5:]
    bce = F.binary_cross_entropy_with_logits(logit, labels, pos_weight=torch.tensor(pos_weight))
    pos = labels > 0
    if pos.any():
        m = pos.unsqueeze(1)
        reg = (box - dist).abs().masked_select(m).mean() + 0.5 * (lm - kps).abs().masked_select(m).mean()
    else:
        reg = out.sum() * 0
    return bce + reg, {"det_bce": bce.item(), "det_reg": reg.item()}


class SCRFDExport(nn.Module):
    """The ONNX graph: normalised input [1, 3, H, W] → SCRFD's 9 outputs for one image."""

    def __init__(self, net: ToyFaceDetector):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)[0]  # [15, h, w]
        cells = out[:1].reshape(1, -1).t()  # [h*w, 1]: row-major, as insightface's anchor grid
        score = torch.sigmoid(cells)
        score = torch.cat([score, torch.zeros_like(score)], 1).reshape(-1, 1)  # anchor 2 never fires
        box = out[1:5].reshape(4, -1).t().repeat_interleave(ANCHORS, 0)
        lm = out[5:].reshape(10, -1).t().repeat_interleave(ANCHORS, 0)
        outs_s, outs_b, outs_k = [score], [box], [lm]
        for s in (16, 32):  # nothing at the coarser strides
            n = (x.shape[2] // s) * (x.shape[3] // s) * ANCHORS
            z = x.new_zeros(1, 1).expand(n, 1) * 0
            outs_s.append(z)
            outs_b.append(x.new_ones(1, 4).expand(n, 4))
            outs_k.append(x.new_zeros(1, 10).expand(n, 10))
        return (*outs_s, *outs_b, *outs_k)


def export_detector_onnx(net: ToyFaceDetector, path: str | Path, size: int = 128) -> Path:
    # onnx: loaded only when exporting a model
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    tmp = path.with_name(path.name + ".tmp")
    model = SCRFDExport(net.eval().cpu())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(tmp), dynamo=False, opset_version=17, input_names=["input.1"],
                          output_names=names, dynamic_axes={"input.1": {2: "height", 3: "width"}, **{n: {0: f"n_{n}"} for n in names}})
    onnx.checker.check_model(onnx.load(str(tmp)))
    tmp.replace(path)
    return path
