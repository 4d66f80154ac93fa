"""The toy face recognizer: a small ArcFace-style CNN, its additive-angular-margin loss, and the ONNX export
that makes it load through insightface exactly like a real model pack.

insightface's contract, read from insightface 2.1 (`model_zoo.ModelRouter`, `ArcFaceONNX`):
- an ONNX file is routed to ArcFaceONNX when its input is [N, 3, S, S] with S >= 112 and S % 16 == 0 and it is
  not a detector (>= 5 outputs); it must have exactly one output, the embedding [N, D];
- the input is the aligned crop, RGB (insightface swaps its BGR images), normalised as (pixel - 127.5) / 127.5,
  unless the first graph nodes are named Sub/Mul (old mxnet exports normalise inside the graph);
- alignment (`face_align.norm_crop`) warps the 5 landmarks onto the 112x112 ArcFace template.
So the toy net takes 112x112 and halves it at once: toy faces carry little detail, and CPU time matters.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 112
INPUT_MEAN = 127.5
INPUT_STD = 127.5


def normalize_crops(crops_uint8_rgb: torch.Tensor) -> torch.Tensor:
    """[B, 3, 112, 112] uint8 RGB → the net's input, exactly as insightface prepares it."""
    return (crops_uint8_rgb.float() - INPUT_MEAN) / INPUT_STD


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class ToyArcFaceNet(nn.Module):
    """112x112 crop → embedding [B, D] (not normalised, like insightface's models; callers L2-normalise).

    avg-pool /2 → 4 strided conv stages (56→28→14→7) → BN-Dropout-FC-BN head (ArcFace's "E" output layer)."""

    def __init__(self, embed_dim: int = 128, width: int = 32, dropout: float = 0.1):
        super().__init__()
        self.config = {"embed_dim": embed_dim, "width": width, "dropout": dropout}
        w = width
        self.features = nn.Sequential(
            nn.AvgPool2d(2),
            _block(3, w, 1),
            _block(w, w, 2),
            _block(w, 2 * w, 2),
            _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2),
            _block(4 * w, 4 * w, 1),
        )
        self.head = nn.Sequential(
            nn.BatchNorm2d(4 * w),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(4 * w * 7 * 7, embed_dim),
            nn.BatchNorm1d(embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AdditiveAngularMarginLoss(nn.Module):
    """ArcFace (Deng et al. 2019): logits s*cos(theta_y + m) for the true class, s*cos(theta_j) for the others.

    When theta_y + m would pass pi the target logit falls back to cos(theta_y) - m*sin(m), which keeps it monotonic
    (the "easy margin" correction of the reference implementation)."""

    def __init__(self, embed_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)
        self.fallback = math.sin(math.pi - margin) * margin

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1)).clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        cos_plus_m = cos * self.cos_m - sin * self.sin_m  # cos(theta + m)
        target = torch.where(cos > self.threshold, cos_plus_m, cos - self.fallback)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * (onehot * target + (1 - onehot) * cos)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17) -> Path:
    """Write `model` as an insightface-compatible recognition ONNX: input "input.1" [N, 3, 112, 112] (dynamic N),
    one output "embedding" [N, D]. Uses the TorchScript exporter (no onnxscript needed)."""
    # onnx: loaded only when exporting a model
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.eval().cpu()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), str(tmp), dynamo=False, opset_version=opset,
            input_names=["input.1"], output_names=["embedding"],
            dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(tmp)))
    tmp.replace(path)
    model.train(was_training)
    return path
