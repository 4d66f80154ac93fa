"""A run that outlives its machine: a compact copy of each checkpoint, small enough to commit.

Why: a long CPU run (the clip model's takes several sessions) writes its DeepSpeed checkpoints under `runs/`, which a
new machine does not have; only the repository travels. A config with `carry: FOLDER` also writes, at every
checkpoint, the part of it that a later run cannot rebuild — the weights and their moving average in float16, the
step, the LR schedule's position and each rank's place in the data stream — and `--resume` on a machine without the
checkpoints starts from it. What it leaves out are the optimizer's moment estimates (twice the weights); they are
rebuilt by the resumed run, whose learning rate ramps up again over `REWARM_STEPS` so the first updates of a fresh
Adam (each a full `lr` step in every weight) do not jolt a trained model. The data itself is not carried: the
commands that wrote it are deterministic (each config's header), and the stream refuses a dataset of another size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch

from moviedreamer.errors import UserError
from moviedreamer.train import sharded

CARRY_FILE = "carry.json"
WEIGHTS = "weights.safetensors"
RANK_FILE = "data_rank{rank}.json"
REWARM_STEPS = 100
FORMAT = 1


def is_carry(folder: Path) -> bool:
    return (Path(folder) / CARRY_FILE).is_file()


def carried_step(folder: Path) -> int:
    """The step a carry folder holds; -1 when there is none."""
    return int(json.loads((Path(folder) / CARRY_FILE).read_text())["step"]) if is_carry(folder) else -1


def _dtype(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().to(torch.float16) if t.is_floating_point() else t.detach().cpu()


def write(engine, stream, average, folder: Path, info, step: int, source: str) -> None:
    """Every rank writes its data position into FOLDER.tmp, rank 0 the weights, the average and carry.json; then
    rank 0 swaps the folder in whole, so a carry folder is never half-written."""
    from moviedreamer.train import dist

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    (tmp / RANK_FILE.format(rank=info.rank)).write_text(json.dumps(stream.state_dict()))
    if info.is_main:
        sharded.save({k: _dtype(v) for k, v in engine.module.state_dict().items()}, tmp, WEIGHTS)
        if average is not None:
            average.save(tmp, dtype=torch.float16)
        meta = {"format": FORMAT, "step": step, "world_size": info.world_size, "source": source,
                "lr_scheduler": engine.lr_scheduler.state_dict() if engine.lr_scheduler is not None else None,
                "global_samples": int(engine.global_samples)}
        (tmp / CARRY_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    dist.barrier()
    if info.is_main:
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def restore(engine, stream, average, folder: Path, info) -> int:
    """Load a carry folder into a freshly initialised engine; returns the step it continues from."""
    folder = Path(folder)
    meta = json.loads((folder / CARRY_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise UserError(f"{folder / CARRY_FILE}: expected carry format {FORMAT}, found {meta.get('format')}")
    if meta["world_size"] != info.world_size:
        raise UserError(f"{folder}: carried from {meta['world_size']} processes, resumed with {info.world_size}; resume with the same number")
    weights = sharded.load(folder, WEIGHTS)
    own = engine.module.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or extra:
        which = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which the model has not"
        raise UserError(f"{folder / WEIGHTS}: expected the weights of this config's model, found one that {which}")
    engine.module.load_state_dict({k: weights[k].to(own[k].dtype) for k in own})
    step = int(meta["step"])
    gas = engine.gradient_accumulation_steps()
    engine.global_steps, engine.global_samples, engine.micro_steps = step, int(meta["global_samples"]), step * gas
    if engine.lr_scheduler is not None and meta["lr_scheduler"] is not None:
        engine.lr_scheduler.load_state_dict(meta["lr_scheduler"])
        for group, lr in zip(engine.optimizer.param_groups, engine.lr_scheduler.get_lr()):
            group["lr"] = lr
    stream.load_state_dict(json.loads((folder / RANK_FILE.format(rank=info.rank)).read_text()))
    if average is not None and not average.load(folder):
        print(f"note: {folder} holds no weight average; it starts now, at step {step}", file=sys.stderr)
    return step


class Rewarm:
    """Scales the scheduled learning rate by (k + 1) / REWARM_STEPS for the first steps after a carried resume."""

    def __init__(self, engine, steps: int = REWARM_STEPS):
        self.engine, self.steps, self.done = engine, steps, 0
        self.apply()

    def apply(self) -> None:
        """Call once the scheduler has set the next step's rates (after engine.step)."""
        if self.done >= self.steps:
            return
        factor = (self.done + 1) / self.steps
        for group in self.engine.optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        self.done += 1
