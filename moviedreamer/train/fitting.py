"""What the plain-torch fitting scripts (the toy judges, the motion field: models trained on what the toy world renders
on the fly, not on shards through the DeepSpeed harness) share: their learning-rate schedule and their log."""

from __future__ import annotations

import json
import math
from pathlib import Path


def cosine_lr(step: int, steps: int, lr: float, warmup: int = 200, floor: float = 0.03) -> float:
    """Linear warm-up over `warmup` steps, then a cosine down to `floor` x lr at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup)))))


def log_record(path: Path, record: dict) -> None:
    """Print one JSON line and append it to the run's log."""
    line = json.dumps(record)
    print(line, flush=True)
    with path.open("a") as f:
        f.write(line + "\n")


def resume_state(path: Path, model, opt) -> tuple[int, float]:
    """(step, training seconds) of the run's checkpoint, loaded into model and optimiser; (0, 0.0) without one."""
    import torch

    if not path.is_file():
        return 0, 0.0
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    return int(state["step"]), float(state["seconds"])


def save_state(path: Path, model, opt, step: int, seconds: float) -> None:
    """The checkpoint `resume_state` reads, written atomically (a kill mid-write leaves the previous one)."""
    import os

    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "seconds": seconds}, tmp)
    os.replace(tmp, path)
