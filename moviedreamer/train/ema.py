"""An exponential moving average of the trained weights (diffusers' `EMAModel`), kept with the run's checkpoints and
exported instead of the raw weights when a config sets `ema_decay`.

Why: with micro batches of a few samples and a high learning rate, a diffusion model's raw weights jitter from step
to step, and what they sample jitters with them; the average over the last ~1 / (1 - decay) steps samples what the
run has learnt. The decay warms up (diffusers' `use_ema_warmup`: 1 - (1 + n)^-2/3, capped at `ema_decay`), so an
average started late — a run resumed from a checkpoint written without one — follows the weights quickly at first.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moviedreamer.errors import UserError
from moviedreamer.train import sharded

WEIGHTS, STATE = "ema.safetensors", "ema.json"


class WeightAverage:
    """The moving average of a module's trainable parameters, by name."""

    def __init__(self, module: torch.nn.Module, decay: float):
        from diffusers.training_utils import EMAModel

        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.ema = EMAModel(self.params, decay=float(decay), use_ema_warmup=True)

    @property
    def steps(self) -> int:
        return int(self.ema.optimization_step)

    def step(self) -> None:
        self.ema.step(self.params)

    def state(self) -> dict[str, torch.Tensor]:
        """{parameter name: averaged weights} (CPU copies)."""
        return {n: s.detach().cpu().clone() for n, s in zip(self.names, self.ema.shadow_params)}

    def save(self, folder: Path, dtype: torch.dtype | None = None) -> None:
        """dtype: store the average in it (a carried copy keeps float16); loading casts back to the weights' dtype."""
        sharded.save({n: (t if dtype is None else t.to(dtype)) for n, t in self.state().items()}, folder, WEIGHTS)
        scalars = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
        (folder / STATE).write_text(json.dumps(scalars))

    def load(self, folder: Path) -> bool:
        """Restore from a checkpoint folder; False when it holds no average (a run that started without one)."""
        if not sharded.exists(folder, WEIGHTS):
            return False
        weights = sharded.load(folder, WEIGHTS)
        missing = [n for n in self.names if n not in weights]
        if missing:
            raise UserError(f"{folder / WEIGHTS}: the weight average lacks {len(missing)} of the model's parameters (first: {missing[0]})")
        state = json.loads((folder / STATE).read_text())
        state["shadow_params"] = [weights[n].to(p.device, p.dtype) for n, p in zip(self.names, self.params)]
        self.ema.load_state_dict(state)
        return True
