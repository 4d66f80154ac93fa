"""Train the judge on frames rendered on the fly (every batch is new: it cannot overfit a fixed set).
Augmentations (blur, noise, colour jitter) make it robust to the softer frames that generators produce."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from moviedreamer.toyworld.judge import DEFAULT_DIR, Judge, evaluate_judge, sample_batch, save_judge


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x: float [B, 3, H, W] in [0, 1]."""
    b = x.shape[0]
    scale = torch.rand(b, generator=gen)
    blurred = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True), size=x.shape[-2:], mode="bilinear")
    x = torch.where((scale < 0.35).view(b, 1, 1, 1), blurred, x)
    x = x * (1 + 0.1 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5)) + 0.04 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = x + torch.randn(x.shape, generator=gen) * 0.03 * torch.rand(b, 1, 1, 1, generator=gen)
    return x.clamp(0, 1)


def train_judge(out_dir: str | Path | None = None, steps: int = 3000, batch: int = 64, seed: int = 0, lr: float = 2e-3, log_every: int = 100, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    model = Judge()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0, bar = time.time(), tqdm(range(steps), desc="train judge", unit="step")
    for step in bar:
        images, scenes, chars, framings = sample_batch(rng, batch)
        x = augment(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, gen)
        out = model(x)
        loss = F.cross_entropy(out["scene"], torch.from_numpy(scenes)) + 2 * F.binary_cross_entropy_with_logits(out["characters"], torch.from_numpy(chars)) \
            + F.cross_entropy(out["framing"], torch.from_numpy(framings))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    minutes = (time.time() - t0) / 60
    scores = evaluate_judge(model, 2000)
    info = {"train_steps": steps, "batch": batch, "seed": seed, "train_minutes": round(minutes, 1), "eval_2000_fresh": scores,
            "command": f"moviedreamer toyworld train-judge --steps {steps} --batch {batch} --seed {seed}"}
    out = save_judge(model, out_dir or DEFAULT_DIR, {"training": info})
    print(json.dumps(info, indent=1))
    print(f"saved the judge to {out}")
    return info
