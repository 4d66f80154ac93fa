"""Train the toy action judge (moviedreamer/toyworld/action_judge.py) on clips rendered on the fly.

Rendering is the slow part, so one worker process renders fresh 16-frame clips (at the size the model
reads) into a replay buffer while the trainer reads batches from it: every clip is seen a few
times, cut at a different length (8-16 frames) and offset, with fresh noise, blur and colour jitter each time.
A checkpoint every `ckpt_every` steps (out_dir/checkpoint/state.pt) makes a killed run resume where it was.
`init` starts from saved weights; from a "half"-stem judge into a "fold"-stem one, the stem is grown so
that the new model first computes what the old one did (its frame weights spread over the folded pixels).

    python -m moviedreamer.train.fit_action_judge --out DIR --steps 3000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from moviedreamer.train.fitting import cosine_lr, log_record, resume_state, save_state
from moviedreamer.toyworld.action_judge import (
    ActionJudge,
    evaluate_action_judge,
    load_action_judge,
    sample_clips,
    save_action_judge,
)

CLIP_FRAMES = 16
VAL_SEED = 60_000_000  # the in-training check; the final figures use action_judge.EVAL_SEED


class _FreshClips(torch.utils.data.IterableDataset):
    """Endless chunks of freshly rendered clips at the size the model reads: (uint8 [n, 16, 3, s, s], labels)."""

    def __init__(self, seed: int, start_step: int, chunk: int, size: int, composed: float = 0.0, still_share: float = 0.12):
        self.seed, self.start_step, self.chunk, self.size, self.composed, self.still_share = seed, start_step, chunk, size, composed, still_share

    def __iter__(self):
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.start_step, 7])
        while True:
            clips, lab = sample_clips(rng, self.chunk, (CLIP_FRAMES, CLIP_FRAMES), augment=True, composed=self.composed, still_share=self.still_share)
            x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).contiguous()
            if x.shape[-1] != self.size:
                x = F.interpolate(x.flatten(0, 1).float() / 255, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
                x = (x * 255).round().clamp(0, 255).to(torch.uint8).reshape(self.chunk, CLIP_FRAMES, 3, self.size, self.size)
            yield x, torch.from_numpy(np.stack([lab["action"], lab["direction"], lab["move"], lab["facing"]], 1))


def augment(x: torch.Tensor, gen: torch.Generator, noise: float = 0.06) -> torch.Tensor:
    """x: float [B, T, 3, H, W] in [0, 1]: colour jitter per clip, flicker per frame, blur, noise."""
    b, t = x.shape[:2]
    r = lambda *shape: torch.rand(*shape, generator=gen)
    x = x * (1 + 0.12 * (r(b, 1, 3, 1, 1) - 0.5)) + 0.05 * (r(b, 1, 1, 1, 1) - 0.5)
    x = x + 0.02 * (r(b, t, 1, 1, 1) - 0.5) * (r(b, 1, 1, 1, 1) < 0.3)
    u = r(b)
    soft, half = (u < 0.25).nonzero().flatten(), ((u >= 0.25) & (u < 0.35)).nonzero().flatten()
    if len(soft):
        k = torch.tensor([1.0, 2.0, 1.0]) / 4
        y = x[soft].flatten(0, 1)
        y = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None]).expand(3, 1, 3, 3).contiguous(), groups=3)
        x[soft] = y.reshape(len(soft), *x.shape[1:])
    if len(half):
        y = x[half].flatten(0, 1)
        y = F.interpolate(F.interpolate(y, scale_factor=0.5, mode="bilinear", antialias=True), size=y.shape[-2:], mode="bilinear")
        x[half] = y.reshape(len(half), *x.shape[1:])
    sigma = noise * r(b, 1, 1, 1, 1) * (r(b, 1, 1, 1, 1) < 0.5)
    return (x + torch.randn(x.shape, generator=gen) * sigma).clamp(0, 1)


def train_action_judge(out_dir: str | Path, steps: int = 3000, batch: int = 32, seed: int = 0, lr: float = 2e-3, log_every: int = 50,
                       threads: int = 1, resume: bool = True, width: int = 32, fresh_per_step: int = 12, buffer_size: int | None = None,
                       ckpt_every: int = 250, eval_every: int = 1000, eval_samples: int = 2000, stem: str = "half",
                       init: str | Path | None = None, look: int = 0, composed: float = 0.0, still_share: float = 0.12) -> dict:
    """Train (or resume) into out_dir; the final weights go to out_dir (config.json + model.safetensors)."""
    torch.set_num_threads(threads)
    out = Path(out_dir)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    ckpt, log = out / "checkpoint" / "state.pt", out / "train.log"
    torch.manual_seed(seed)
    model = ActionJudge(width, stem=stem, look=look)
    if init:
        _init_from(model, load_action_judge(init))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    step, seconds = resume_state(ckpt, model, opt) if resume else (0, 0.0)
    if step:
        log_record(log, {"resumed_at": step, "train_seconds": round(seconds)})
    size = model.read_size
    buffer_size = buffer_size or (2400 if size <= 64 else 1200)  # about 0.5 / 0.9 GB of uint8 clips
    noise = 0.06 if size <= 64 else 0.12  # the same noise at 128 px is about half as strong once downsampled
    loader = torch.utils.data.DataLoader(_FreshClips(seed, step, fresh_per_step, size, composed, still_share), batch_size=None, num_workers=1, prefetch_factor=4,
                                         persistent_workers=False)
    source = {"chunks": iter(loader)}  # dropped at the end, which stops the render worker
    buf_x = torch.zeros(buffer_size, CLIP_FRAMES, 3, size, size, dtype=torch.uint8)
    buf_y = torch.zeros(buffer_size, 4, dtype=torch.long)
    filled, head = 0, 0

    def take_chunk():
        nonlocal filled, head
        x, y = next(source["chunks"])
        idx = (head + torch.arange(len(x))) % buffer_size
        buf_x[idx], buf_y[idx] = x, y
        head, filled = int(idx[-1] + 1) % buffer_size, min(buffer_size, filled + len(x))

    while filled < min(buffer_size, 8 * batch):
        take_chunk()
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    rng = np.random.default_rng([seed, step, 11])
    model.train()
    running = {"loss": 0.0, "action": 0.0, "direction": 0.0, "move": 0.0, "facing": 0.0, "n": 0}
    t0 = time.time()
    while step < steps:
        take_chunk()
        pick = torch.from_numpy(rng.integers(0, filled, batch))
        t_len = int(rng.integers(8, CLIP_FRAMES + 1))
        offs = torch.from_numpy(rng.integers(0, CLIP_FRAMES - t_len + 1, batch))
        frames = offs[:, None] + torch.arange(t_len)[None]
        x = buf_x[pick[:, None], frames].float() / 255
        y = buf_y[pick]
        pred = model(augment(x, gen, noise))
        losses = [F.cross_entropy(pred["action"], y[:, 0]), F.cross_entropy(pred["move"], y[:, 2])]
        if "facing" in pred:
            losses.append(F.cross_entropy(pred["facing"], y[:, 3]))
        if (y[:, 1] >= 0).any():
            losses.append(F.cross_entropy(pred["direction"], y[:, 1], ignore_index=-1))
        loss = sum(losses)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        with torch.no_grad():
            d = y[:, 1] >= 0
            running["loss"] += loss.item()
            running["action"] += float((pred["action"].argmax(-1) == y[:, 0]).float().mean())
            running["move"] += float((pred["move"].argmax(-1) == y[:, 2]).float().mean())
            running["direction"] += float((pred["direction"].argmax(-1)[d] == y[d, 1]).float().mean()) if d.any() else 1.0
            running["facing"] += float((pred["facing"].argmax(-1) == y[:, 3]).float().mean()) if "facing" in pred else 0.0
            running["n"] += 1
        if step % log_every == 0 or step == steps:
            n = running.pop("n")
            elapsed = seconds + time.time() - t0
            log_record(log, {"step": step, **{k: round(v / n, 4) for k, v in running.items()}, "lr": round(cosine_lr(step - 1, steps, lr), 6),
                       "train_minutes": round(elapsed / 60, 1)})
            running = {k: 0.0 for k in running} | {"n": 0}
        if step % ckpt_every == 0 or step == steps:
            save_state(ckpt, model, opt, step, seconds + time.time() - t0)
        if eval_every and step % eval_every == 0 and step < steps:
            scores = evaluate_action_judge(model, 300, VAL_SEED)
            log_record(log, {"step": step, "val_300": {k: round(scores[k], 4) for k in ("action", "direction", "move")}, "per_action": scores["per_action"]})
            model.train()
    seconds += time.time() - t0
    source.clear()
    del loader
    scores = evaluate_action_judge(model, eval_samples)
    info = {"train_steps": step, "batch": batch, "seed": seed, "lr": lr, "threads": threads, "render_worker_processes": 1,
            "train_minutes": round(seconds / 60, 1), f"eval_{eval_samples}_fresh": {k: round(scores[k], 4) for k in ("action", "direction", "move")},
            "command": f"python -m moviedreamer.train.fit_action_judge --out DIR --steps {steps} --batch {batch} --seed {seed} --lr {lr}"}
    save_action_judge(model, out, {"training": info})
    log_record(log, {"final": info, "confusion_action": scores["confusion_action"], "confusion_move": scores["confusion_move"]})
    return info


def _init_from(model: ActionJudge, src: ActionJudge) -> None:
    state = src.state_dict()
    w = state["pair.0.weight"]  # [C, 6, 3, 3] (half) or [C, 15, 3, 3] (fold)
    if src.stem == "half" and model.stem == "fold":
        # folded channel 4c + k is sub-pixel k of colour c: the half-size frame is their mean
        state["pair.0.weight"] = torch.cat([w[:, :3].repeat_interleave(4, dim=1) / 4, w[:, 3:]], dim=1)
    elif src.stem != model.stem:
        raise ValueError(f"cannot start a {model.stem!r}-stem judge from a {src.stem!r}-stem one")
    if model.look is not None and src.look is None:  # a new appearance branch: its trunk inputs start at zero
        old = state["trunk.1.weight"]
        state["trunk.1.weight"] = torch.cat([old, torch.zeros(old.shape[0], model.trunk[1].in_features - old.shape[1])], dim=1)
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("look.")})
    for k, v in model.state_dict().items():  # heads the source lacks start fresh
        state.setdefault(k, v)
    model.load_state_dict(state)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moviedreamer.train.fit_action_judge", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="run folder: checkpoint/, train.log and the final config.json + model.safetensors")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--stem", choices=["fold", "half"], default="half", help="half: frames at the input size (default, the committed judge); fold: at full resolution")
    p.add_argument("--look", type=int, default=0, help="width of a last-frame appearance branch with a facing head (0: none, the committed judge)")
    p.add_argument("--init", help="start from the weights in this folder (config.json + model.safetensors)")
    p.add_argument("--composed", type=float, default=0.0, help="share of clips that cast random compositional characters (the rest: the catalogue)")
    p.add_argument("--still-share", type=float, default=0.12, help="share of training clips that are one frame repeated (labelled with what a still shows)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    a = p.parse_args(argv)
    train_action_judge(a.out, a.steps, a.batch, a.seed, a.lr, a.log_every, a.threads, not a.no_resume, width=a.width, eval_every=a.eval_every,
                       stem=a.stem, init=a.init, look=a.look, composed=a.composed, still_share=a.still_share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
