"""Does the body under a detected face look like the character meant to be there?

Face matching alone cannot tell two toy look-alikes apart when they share clothes but the decoder drew the face of
one on the body of the other, or a character who should not be in the shot with a face close to a given one. So each
detection's body region (the face box widened by half its width on each side, a quarter of its height up and two
heights down) is embedded by an image encoder in the descriptors' own embedding space (the toy profile's CLIP is both
its descriptor and its vision encoder) and compared with the description of every character of the story: a
contrastive look score, log p(character | region) = log-softmax over the cast at `temperature`, clipped at `floor` and
mapped to [0, 1] (1 + lp / |floor|). Against the whole cast and not only the shot's characters, so that a look-alike
outside the shot counts against.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def body_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """The body region below a face box (x0, y0, x1, y1), clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in bbox[:4])
    w, h = max(1.0, x1 - x0), max(1.0, y1 - y0)
    bx0, by0 = max(0, int(round(x0 - 0.5 * w))), max(0, int(round(y0 - 0.25 * h)))
    bx1, by1 = min(width, int(round(x1 + 0.5 * w))), min(height, int(round(y1 + 2.0 * h)))
    return bx0, by0, max(bx0 + 1, bx1), max(by0 + 1, by1)


class LookCheck:
    """Scores detections against character descriptions with an image encoder that shares the descriptor space
    (`vision.encode_image(float [B, 3, H, W]) -> (pooled [B, D], patches)`)."""

    def __init__(self, vision, weight: float = 2.0, temperature: float = 20.0, floor: float = -5.0):
        if floor >= 0:
            raise ValueError(f"LookCheck floor must be negative, found {floor}")
        self.vision, self.weight, self.temperature, self.floor = vision, float(weight), float(temperature), float(floor)

    @property
    def fingerprint(self) -> str:
        return f"look:{getattr(self.vision, 'fingerprint', type(self.vision).__name__)}:{self.weight}:{self.temperature}:{self.floor}"

    def body_crops(self, image: np.ndarray, dets) -> torch.Tensor:
        """uint8 [H, W, 3] and detections → float [n, 3, S, S] in [0, 1] (S: the encoder's input size)."""
        h, w = image.shape[:2]
        size = int(getattr(self.vision, "image_size", 64))
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
        crops = []
        for d in dets:
            x0, y0, x1, y1 = body_box(d.bbox, w, h)
            crop = pixels[None, :, y0:y1, x0:x1]
            crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
        return torch.stack(crops).clamp(0, 1)

    @torch.no_grad()
    def scores(self, image: np.ndarray, dets, looks: torch.Tensor, cast: torch.Tensor | None = None) -> np.ndarray:
        """[N, n_det] in [0, 1]: how well detection j's body reads as character i (description `looks[i]`) among
        the `cast` (all the story's characters' descriptions; None: the given looks only). A zero look row (no
        description) scores 1 against every detection: it neither helps nor hurts."""
        looks = torch.as_tensor(looks).float()
        given = looks.abs().sum(-1) > 0
        out = np.ones((len(looks), len(dets)), dtype=np.float64)
        if not len(dets) or not bool(given.any()):
            return out
        pooled, _ = self.vision.encode_image(self.body_crops(image, dets))
        region = F.normalize(pooled.float().cpu(), dim=-1)
        pool = looks[given] if cast is None else torch.as_tensor(cast).float()
        pool = F.normalize(torch.cat([pool[pool.abs().sum(-1) > 0], looks[given]]), dim=-1)
        # each character once in the softmax: a given look that is also in the cast would count twice
        keep = [i for i in range(len(pool)) if not any(float(pool[i] @ pool[j]) > 1 - 1e-5 for j in range(i))]
        pool = pool[keep]
        logits = self.temperature * region @ pool.T  # [n_det, M]
        norm = torch.logsumexp(logits, dim=-1)  # [n_det]
        lp = self.temperature * F.normalize(looks[given], dim=-1) @ region.T - norm[None]  # [N_given, n_det]
        out[given.numpy()] = (1 + lp.clamp_min(self.floor) / -self.floor).double().numpy()
        return out
