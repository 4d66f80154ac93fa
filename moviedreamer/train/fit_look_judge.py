"""Train the compositional frame judge (toyworld/look_judge.py) on frames rendered on the fly: every batch is new, so
it cannot overfit a fixed set; most shots cast random compositions, the rest the catalogue. Resumable: a checkpoint
(model, optimiser, schedule, random streams) every `save_every` steps; a killed run continues where it stopped.

    python -m moviedreamer.train.fit_look_judge --out runs/look-judge --steps 4000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from moviedreamer.safeio import load_safetensors
from moviedreamer.toyworld.look_judge import LookJudge, save_look_judge, to_input
from moviedreamer.toyworld.look_judge_data import evaluate_look_judge, judge_loss, sample_batch


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, colour jitter and noise (x: float [B, 3, H, W] in [0, 1]): generated frames are softer than renders."""
    b = x.shape[0]
    blurred = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True), size=x.shape[-2:], mode="bilinear")
    x = torch.where((torch.rand(b, generator=gen) < 0.35).view(b, 1, 1, 1), blurred, x)
    x = x * (1 + 0.1 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5)) + 0.04 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = x + torch.randn(x.shape, generator=gen) * 0.03 * torch.rand(b, 1, 1, 1, generator=gen)
    return x.clamp(0, 1)


def train_look_judge(out: Path, steps: int = 4000, batch: int = 64, seed: int = 0, lr: float = 2e-3, composed: float = 0.75,
                     save_every: int = 250, threads: int = 1, resume: bool = True, eval_samples: int = 2000, init: Path | None = None) -> dict:
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = LookJudge()
    if init is not None:  # start from another judge's weights where the shapes agree (e.g. the backbone)
        mine, theirs = model.state_dict(), load_safetensors(Path(init) / "model.safetensors")
        model.load_state_dict({k: theirs[k].to(v.dtype) if k in theirs and theirs[k].shape == v.shape else v for k, v in mine.items()})
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng, gen, start = np.random.default_rng(seed), torch.Generator().manual_seed(seed), 0
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        gen.set_state(state["gen"])
        start = state["step"]
    log = (out / "train.log").open("a")
    t0 = time.time()
    model.train()
    for step in tqdm(range(start, steps), desc="train look judge", unit="step", initial=start, total=steps):
        images, lab = sample_batch(rng, batch, composed=composed)
        x = to_input(augment(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, gen))
        loss = judge_loss(model, x, lab, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 50 == 0:
            log.write(json.dumps({"step": step + 1, "loss": round(loss.item(), 4), "lr": round(sched.get_last_lr()[0], 6),
                                  "minutes": round((time.time() - t0) / 60, 1)}) + "\n")
            log.flush()
        if (step + 1) % save_every == 0 or step + 1 == steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                        "gen": gen.get_state(), "step": step + 1}, tmp)
            tmp.replace(ckpt)
    model.eval()
    figures = {"composed": evaluate_look_judge(model, eval_samples, composed=1.0), "catalogue": evaluate_look_judge(model, eval_samples, composed=0.0)}
    info = {"train_steps": steps, "batch": batch, "seed": seed, "lr": lr, "composed_share": composed, f"eval_{eval_samples}_fresh": figures,
            "command": f"python -m moviedreamer.train.fit_look_judge --out DIR --steps {steps} --batch {batch} --seed {seed}"}
    save_look_judge(model, out / "export", {"training": info})
    print(json.dumps(info, indent=1))
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m moviedreamer.train.fit_look_judge", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="run folder: checkpoint.pt, train.log, export/ (config.json + model.safetensors)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--composed", type=float, default=0.75, help="share of shots that cast random compositions")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-samples", type=int, default=2000)
    ap.add_argument("--init", type=Path, help="start from the weights of this judge folder where the shapes agree")
    ap.add_argument("--no-resume", action="store_true")
    a = ap.parse_args(argv)
    train_look_judge(a.out, a.steps, a.batch, a.seed, a.lr, a.composed, threads=a.threads, resume=not a.no_resume, eval_samples=a.eval_samples,
                      init=a.init)


if __name__ == "__main__":
    main()
