"""Faces: detection + alignment + ArcFace embedding, through insightface on local ONNX files.

A model pack is a folder of .onnx files in insightface's layout (antelopev2: scrfd_10g_bnkps.onnx + glintr100.onnx,
buffalo_l: det_10g.onnx + w600k_r50.onnx, plus landmark/attribute models that are not needed here). Each file is
routed by `insightface.model_zoo.get_model` from its input/output shapes, as `FaceAnalysis` does; we keep the first
detector and the first recognizer. The toy pack holds the toy ArcFace net (`arcface.export_onnx`) and, once trained,
a toy detector in SCRFD's output layout; an optional `pack.json` sets {"det_size": [w, h], "det_thresh": t}.

Images are RGB (HxWx3 uint8 arrays, PIL images, or [3, H, W] tensors); insightface's BGR is handled inside.
Embeddings are L2-normalised float32 torch tensors.

Defined behaviour (`embed_reference`, a character's reference face file):
- no face found            → UserError naming the file;
- several faces            → the largest is used, with a warning naming the file;
- only faces < min_face_px → UserError naming the file and the size found;
- a pack with no detector  → the whole image is taken as an already-cropped face.
`detect_and_embed` returns every face of at least `min_face_px` (smaller ones are not embedded), largest first.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from moviedreamer.encoders.cache import LRUCache, file_key, fingerprint_files
from moviedreamer.errors import CheckpointError, UserError, first_line
from moviedreamer.safeio import load_json

logger = logging.getLogger(__name__)

MIN_FACE_PX = 16
DETECTOR_PREFIXES = ("det", "scrfd", "retinaface")
RECOGNIZER_PREFIXES = ("rec", "glintr", "w600k", "arcface")


@dataclass
class Detection:
    bbox: np.ndarray  # [4] x1, y1, x2, y2 in pixels
    score: float
    kps: np.ndarray | None = None  # [5, 2] eyes, nose, mouth corners (None if the detector gives none)

    @property
    def size(self) -> float:
        """The shorter side of the box: what decides whether a face is big enough to embed."""
        return float(min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))


@dataclass
class Face(Detection):
    embedding: torch.Tensor | None = None  # [D], L2-normalised


class FaceFinder(Protocol):
    """Anything that finds faces in an RGB image: an insightface detector, or the toy world's detector/judge."""

    def find_faces(self, image: np.ndarray) -> list[Detection]: ...


class InsightfaceFinder:
    """A detector ONNX routed by insightface (SCRFD layout: 6/9/10/15 outputs)."""

    def __init__(self, det_model, det_size=(640, 640), det_thresh: float = 0.5, ctx_id: int = -1):
        self.model = det_model
        self.det_size, self.det_thresh = tuple(int(v) for v in det_size), float(det_thresh)
        self.model.prepare(ctx_id, input_size=self.det_size, det_thresh=self.det_thresh)

    def find_faces(self, image: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(to_rgb_uint8(image)[:, :, ::-1])
        bboxes, kpss = self.model.detect(bgr, max_num=0)
        return [
            Detection(bboxes[i, :4].astype(np.float32), float(bboxes[i, 4]), None if kpss is None else kpss[i].astype(np.float32))
            for i in range(bboxes.shape[0])
        ]


class ArcFaceRecognizer:
    """insightface's ArcFaceONNX: aligned crop → embedding."""

    def __init__(self, rec_model, ctx_id: int = -1):
        self.model = rec_model
        self.model.prepare(ctx_id)
        self.input_size = int(rec_model.input_size[0])
        batch = rec_model.input_shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else 64  # some exports fix the batch at 1
        dim = rec_model.output_shape[-1]
        self.embed_dim = dim if isinstance(dim, int) else int(self._feats([np.zeros((self.input_size,) * 2 + (3,), np.uint8)]).shape[-1])

    def embed_crops(self, crops_rgb: list[np.ndarray]) -> torch.Tensor:
        # OpenCV is heavy: loaded only for optical flow
        import cv2

        s = self.input_size
        bgr = [np.ascontiguousarray(cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA if min(c.shape[:2]) > s else cv2.INTER_LINEAR)[:, :, ::-1])
               for c in crops_rgb]
        if not bgr:
            return torch.zeros(0, self.embed_dim)
        return F.normalize(torch.from_numpy(self._feats(bgr)).reshape(len(bgr), -1), dim=-1)

    def _feats(self, bgr: list[np.ndarray]) -> np.ndarray:
        chunks = [self.model.get_feat(bgr[i : i + self.max_batch]) for i in range(0, len(bgr), self.max_batch)]
        return np.concatenate([np.asarray(c, dtype=np.float32).reshape(len(c), -1) for c in chunks])

    def crop(self, image_rgb: np.ndarray, det: Detection) -> np.ndarray:
        """The aligned crop: landmarks warped onto the ArcFace template, or (no landmarks) the box made square."""
        # insightface is heavy: loaded only when a face pack is read
        from insightface.utils import face_align

        if det.kps is not None:
            bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
            with warnings.catch_warnings():  # scikit-image deprecations inside insightface's alignment
                warnings.simplefilter("ignore", FutureWarning)
                return np.ascontiguousarray(face_align.norm_crop(bgr, landmark=det.kps, image_size=self.input_size)[:, :, ::-1])
        return square_crop(image_rgb, det.bbox)


class FaceEmbedder:
    """The one face interface the pipeline and the evaluation use."""

    def __init__(self, recognizer: ArcFaceRecognizer, finder: FaceFinder | None = None, min_face_px: int = MIN_FACE_PX, cache_size: int = 1024):
        self.recognizer, self.finder, self.min_face_px = recognizer, finder, min_face_px
        self.embed_dim = recognizer.embed_dim
        self.cache = LRUCache(cache_size)  # file_key(path) -> embedding [D]
        self.source: tuple[list, str] = ([], "faces")  # (ONNX files, settings), set by load_face_pack

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the ONNX models and settings, for the pipeline's resume keys."""
        return fingerprint_files(*self.source)

    def embed_crops(self, crops) -> torch.Tensor:
        """Already-cropped faces (a list of RGB images, or [M, H, W, 3] uint8) → [M, D] normalised."""
        crops = [to_rgb_uint8(c) for c in crops]
        for i, c in enumerate(crops):
            if min(c.shape[:2]) < self.min_face_px:
                raise UserError(f"face crop {i} is {c.shape[1]}x{c.shape[0]} px: faces smaller than {self.min_face_px} px cannot be embedded reliably")
        return self.recognizer.embed_crops(crops)

    def detect_and_embed(self, image) -> list[Face]:
        if self.finder is None:
            raise UserError("this face model pack has no face detector (expected e.g. det_10g.onnx or scrfd_10g_bnkps.onnx in the pack folder)")
        rgb = to_rgb_uint8(image)
        dets = sorted(self.finder.find_faces(rgb), key=lambda d: d.area, reverse=True)
        big = [d for d in dets if d.size >= self.min_face_px]
        if len(big) < len(dets):
            logger.debug("%d face(s) smaller than %d px not embedded", len(dets) - len(big), self.min_face_px)
        if not big:
            return []
        emb = self.recognizer.embed_crops([self.recognizer.crop(rgb, d) for d in big])
        return [Face(d.bbox, d.score, d.kps, e) for d, e in zip(big, emb)]

    def embed_reference(self, path: str | Path) -> torch.Tensor:
        """A character's reference face file → [D]; encoded once per run (cached by path, size and mtime)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: expected a face image file, found " + ("a folder" if path.exists() else "no such file"))
        key = file_key(path)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        rgb = read_rgb(path)
        if self.finder is None:  # no detector: the file is the face crop (the toy references are rendered crops)
            if min(rgb.shape[:2]) < self.min_face_px:
                raise UserError(f"{path}: the face image is {rgb.shape[1]}x{rgb.shape[0]} px, smaller than the {self.min_face_px} px minimum")
            emb = self.recognizer.embed_crops([rgb])[0]
        else:
            dets = sorted(self.finder.find_faces(rgb), key=lambda d: d.area, reverse=True)
            if not dets:
                # a tight crop of a face (a face filling the picture) is larger than any face the detector saw in a
                # frame: look again with the picture set in a margin of its own border colours
                m = max(rgb.shape[:2]) // 2
                rgb = np.pad(rgb, ((m, m), (m, m), (0, 0)), mode="edge")
                dets = sorted(self.finder.find_faces(rgb), key=lambda d: d.area, reverse=True)
            if not dets:
                raise UserError(f"{path}: no face found in this image: use a picture where the character's face is clearly visible")
            big = [d for d in dets if d.size >= self.min_face_px]
            if not big:
                w, h = dets[0].bbox[2] - dets[0].bbox[0], dets[0].bbox[3] - dets[0].bbox[1]
                raise UserError(f"{path}: the largest face found is {w:.0f}x{h:.0f} px, smaller than the {self.min_face_px} px minimum: "
                                "use a larger or closer picture of the face")
            if len(dets) > 1:
                logger.warning("%s: %d faces found; using the largest (%.0f px)", path, len(dets), big[0].size)
            emb = self.recognizer.embed_crops([self.recognizer.crop(rgb, big[0])])[0]
        self.cache.put(key, emb)
        return emb


# ------------------------------------------------------------------------------------------------------- loading


def load_face_pack(path: str | Path, device: str = "cpu", det_size=None, det_thresh=None, min_face_px: int = MIN_FACE_PX) -> FaceEmbedder:
    """An insightface pack folder → FaceEmbedder (recognizer required, detector used when present)."""
    # insightface is heavy: loaded only when a face pack is read
    from insightface.model_zoo import get_model

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected an insightface model-pack folder (e.g. det_10g.onnx + w600k_r50.onnx), found "
                              + ("a file" if path.exists() else "no such folder"))
    files = sorted(path.glob("*.onnx"), key=lambda p: (not p.name.lower().startswith(DETECTOR_PREFIXES + RECOGNIZER_PREFIXES), p.name))
    if not files:
        raise CheckpointError(f"{path}: expected .onnx files of an insightface pack (e.g. det_10g.onnx + w600k_r50.onnx), found none")
    options = load_json(path / "pack.json") if (path / "pack.json").is_file() else {}
    cuda = str(device).startswith("cuda")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    found = {}
    for f in files:
        if len(found) == 2:
            break
        try:
            model = get_model(str(f), providers=providers)
        except Exception as e:  # onnxruntime raises its own types for a corrupt or truncated file
            why = first_line(e)
            raise CheckpointError(f"{f}: expected a valid ONNX model that insightface can load, found one that cannot be loaded ({why})") from None
        task = getattr(model, "taskname", None)
        if task in ("detection", "recognition") and task not in found:
            found[task] = model
    if "recognition" not in found:
        raise CheckpointError(f"{path}: expected a recognition model (ArcFace ONNX such as w600k_r50.onnx or glintr100.onnx: one input "
                              f"[N, 3, 112, 112], one output), found none among {', '.join(f.name for f in files)}")
    ctx = 0 if cuda else -1
    finder = None
    if "detection" in found:
        finder = InsightfaceFinder(found["detection"], det_size or options.get("det_size", (640, 640)),
                                   det_thresh if det_thresh is not None else options.get("det_thresh", 0.5), ctx)
    embedder = FaceEmbedder(ArcFaceRecognizer(found["recognition"], ctx), finder, min_face_px)
    used = [Path(m.model_file) for m in found.values()]
    settings = f"faces:{min_face_px}:{finder and (finder.det_size, finder.det_thresh)}"
    embedder.source = (used, settings)
    return embedder


# -------------------------------------------------------------------------------------------------------- images


def to_rgb_uint8(image) -> np.ndarray:
    """HxWx3 uint8 RGB from a numpy array, a PIL image or a [3, H, W] tensor (float in [0, 1] or uint8)."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() != 3 or t.shape[0] != 3:
            raise UserError(f"expected an image tensor [3, H, W], found {tuple(t.shape)}")
        t = t if t.dtype == torch.uint8 else (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return np.ascontiguousarray(t.permute(1, 2, 0).numpy())
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"expected an RGB image HxWx3, found an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path}: expected an image file (PNG, JPEG, ...), found one that cannot be read ({str(e)[:120]})") from None


def square_crop(image: np.ndarray, bbox) -> np.ndarray:
    """The box grown to a square around its centre (zero-padded beyond the image)."""
    x1, y1, x2, y2 = [float(v) for v in bbox[:4]]
    side = max(x2 - x1, y2 - y1, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    l, t = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    out = np.zeros((s, s, 3), np.uint8)
    h, w = image.shape[:2]
    sx1, sy1, sx2, sy2 = max(l, 0), max(t, 0), min(l + s, w), min(t + s, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - t : sy2 - t, sx1 - l : sx2 - l] = image[sy1:sy2, sx1:sx2]
    return out
