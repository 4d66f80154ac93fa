"""Reconstruction figures of the keyframe tokenizer (bench/bench_tokenizer.py prints them): PSNR, SSIM, identity
preservation (face-embedding cosine between the original and the reconstructed face of each character), and judge
agreement (the toy judge reads the same scene / characters / framing in both), each under input variants: the
decoder with all its inputs, without faces, without descriptors, with the tokens only."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.tokenizer.render import decode_reranked, to_uint8

VARIANTS = {"all": (True, True), "no faces": (True, False), "no descriptors": (False, True), "tokens only": (False, False)}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, images in [0, 1]: [B, 3, H, W] → [B] dB."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per image SSIM (Wang et al. 2004: Gaussian window 11 / 1.5, K1 0.01, K2 0.03, data range 1), averaged over
    RGB channels and valid window positions: [B, 3, H, W] in [0, 1] → [B]."""
    a, b = a.float(), b.float()
    c = a.shape[1]
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()
    blur = lambda t: F.conv2d(t, k, groups=c)  # noqa: E731  valid positions only, as the reference implementation
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def face_crops(image: np.ndarray, boxes: dict, scale: float, min_px: int = 16) -> dict[str, np.ndarray]:
    """Character id → its face crop (uint8 HWC) from `boxes` (keyframe pixels, scaled by `scale`); small faces skipped."""
    out = {}
    h, w = image.shape[:2]
    for cid, (x0, y0, x1, y1) in (boxes or {}).items():
        x0, y0, x1, y1 = (int(round(v * scale)) for v in (x0, y0, x1, y1))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if min(x1 - x0, y1 - y0) >= min_px:
            out[cid] = image[y0:y1, x0:x1]
    return out


@torch.no_grad()
def evaluate(tokenizer, items: list[dict], variants=("all",), seed: int = 0, batch: int = 8, face_embedder=None, judge=None,
             steps: int | None = None, guidance: float | None = None, id_guidance: float | None = None, scorer=None,
             candidates: int = 1, accept: float = 0.95) -> dict[str, dict[str, float]]:
    """items: dicts with patches, pooled, desc, faces (a stage's samples), `reference` float [3, R, R] in [0, 1] and
    optionally `face_boxes` + `scale`, and `cast` (the story's character description embeddings, for the scorer's
    look check). Returns {variant: {psnr, ssim, face_cos, faces, judge_*, tried}};
    judge_characters_wide / _medium / _close split the character agreement by the framing the judge reads in the
    original. With a `scorer` and `candidates` > 1 each keyframe is the best of up to that many (rerank.py); `tried`
    is the mean number decoded; with a scorer, `face_count` is how often its detector finds as many faces in the
    reconstruction as in the original."""
    results = {}
    for name in variants:
        use_desc, use_faces = VARIANTS[name]
        ps, ss, cos, tried, counts, agree = [], [], [], [], [], {"scene": [], "characters": [], "framing": [], "scene_characters": [], "all": []}
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            tokens = tokenizer.compressor(torch.stack([c["patches"] for c in chunk]).to(tokenizer.device),
                                          torch.stack([c["pooled"] for c in chunk]).to(tokenizer.device))
            out = decode_reranked(tokenizer, scorer, tokens, [c["desc"] for c in chunk] if use_desc else None,
                                  [c["faces"] for c in chunk] if use_faces else None, seed=[seed + i + j for j in range(len(chunk))],
                                  candidates=candidates if scorer is not None else 1, accept=accept,
                                  characters=[len(c["faces"]) for c in chunk], cast=[c.get("cast") for c in chunk], steps=steps, guidance=guidance,
                                  id_guidance=id_guidance)
            images = out.images
            tried += out.tried
            ref = torch.stack([c["reference"] for c in chunk])
            ps += psnr(images, ref).tolist()
            ss += ssim(images, ref).tolist()
            gen, orig = to_uint8(images), to_uint8(ref)
            if scorer is not None:  # the number of faces the detector finds: a character drawn twice is caught here
                finder = scorer.faces.finder
                counts += [len(finder.find_faces(g)) == len(finder.find_faces(o)) for g, o in zip(gen, orig)]
            if face_embedder is not None:
                for c, g_img, o_img in zip(chunk, gen, orig):
                    a, b = face_crops(o_img, c.get("face_boxes"), c.get("scale", 1.0)), face_crops(g_img, c.get("face_boxes"), c.get("scale", 1.0))
                    for cid in a:
                        e = face_embedder.embed_crops([a[cid], b[cid]])
                        cos.append(float(F.cosine_similarity(e[0:1], e[1:2])))
            if judge is not None:
                for p, q in zip(judge.predict(orig), judge.predict(gen)):
                    same = {k: p[k] == q[k] for k in ("scene", "characters", "framing")}
                    for k, v in same.items():
                        agree[k].append(v)
                    agree["scene_characters"].append(same["scene"] and same["characters"])
                    agree["all"].append(all(same.values()))
                    agree.setdefault(f"characters_{p['framing']}", []).append(same["characters"])  # by the original's framing
        row = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(ps), "tried": float(np.mean(tried))}
        if cos:
            row.update(face_cos=float(np.mean(cos)), faces=len(cos))
        if counts:
            row["face_count"] = float(np.mean(counts))
        if agree["all"]:
            row.update({f"judge_{k}": float(np.mean(v)) for k, v in agree.items()})
        results[name] = row
    return results
