"""Where the models live while the pipeline runs: the dtype they load in, and stage-wise placement.

`--dtype auto|fp32|bf16|fp16` (auto: bf16 on CUDA, fp32 on the CPU) is the dtype every torch model of the generate
path loads in (the insightface pack is ONNX and runs in float32 through onnxruntime; a VAE whose config says
`force_upcast` stays float32 under fp16, vae.py).

Stage-wise placement: on an accelerator, a stage's models sit on the device only while that stage runs; the others
wait in CPU memory. Peak device memory is then the largest stage's, not the sum of all of them. The composition root
(pipeline/profile.py) registers each loaded model as a *unit* under a name of `STAGES`; `MovieDreamerPipeline` calls
`Placement.enter(stage)` before each stage. On the CPU the device and the waiting place are the same and nothing moves
(the ledger of which units a stage holds is still kept, for the tests and `checkpoints --memory`).

A unit is anything with `.to(device)`: an `nn.Module` (the AR model, the I2V model, a VAE, the keyframe tokenizer's
compressor and decoder, each moved alone so that the frozen parts they share are not dragged along) or an encoder
wrapper (encoders/clip_vision.py, encoders/longclip.py) that moves its model and remembers its device.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import torch

from moviedreamer.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)

# The units each stage uses (a stage that does not need one of them on a given story still holds it: the plan is
# the most a stage may need). Names are the composition root's; a unit shared by two names moves once.
STAGES: dict[str, tuple[str, ...]] = {
    "encode": ("descriptor_encoder", "vision_encoder", "keyframe_tokenizer.compressor", "keyframe_vision"),
    "plan": ("ar",),
    "keyframes": ("keyframe_tokenizer.compressor", "keyframe_tokenizer.decoder", "vae", "keyframe_vision", "keyframe_vae",
                  "vision_encoder"),
    "clips": ("i2v", "i2v_vae", "i2v_vision", "i2v_descriptor", "descriptor_encoder"),
}


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """'auto' (or None) → bfloat16 on CUDA, float32 elsewhere; 'fp32' / 'bf16' / 'fp16' (or a torch dtype) as given."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise UserError(f"--dtype: expected one of {', '.join(DTYPE_CHOICES)}, found {dtype}")
        return dtype
    name = (dtype or "auto").lower()
    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise UserError(f"--dtype: expected one of {', '.join(DTYPE_CHOICES)}, found {dtype!r}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype).replace("torch.", ""))


def unit_modules(unit) -> list[torch.nn.Module]:
    """The torch modules a unit holds (an encoder wrapper's `.model`, or the unit itself)."""
    if isinstance(unit, torch.nn.Module):
        return [unit]
    model = getattr(unit, "model", None)
    return [model] if isinstance(model, torch.nn.Module) else []


def unit_state(unit) -> tuple[torch.dtype | None, torch.device | None, int]:
    """(dtype of its floating parameters, their device, bytes of its weights: parameters and persistent buffers) of a
    unit; (None, None, 0) without any."""
    modules = unit_modules(unit)
    floats = [p for m in modules for p in m.parameters() if p.is_floating_point()]
    if not floats:
        return None, None, 0
    tensors = {id(t): t for m in modules for t in m.state_dict().values()}.values()
    return floats[0].dtype, floats[0].device, sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class StageRecord:
    """What one stage held: its units' names, their parameter bytes, and (on CUDA) the device's peak allocation."""

    stage: str
    units: list[str]
    weight_bytes: int
    peak_bytes: int | None = None
    states: dict = field(default_factory=dict)  # unit name → (dtype, device) when the stage began


class Placement:
    """Moves the registered units so that only the current stage's sit on `device` (the others on `offload`)."""

    def __init__(self, device: str = "cpu", offload: str = "cpu", stages: dict[str, tuple[str, ...]] | None = None):
        self.device, self.offload = torch.device(device), torch.device(offload)
        self.stages = dict(stages or STAGES)
        self.units: dict[str, object] = {}
        self.stage: str | None = None
        self.records: list[StageRecord] = []
        self.observers: list = []  # called with (stage, placement) once a stage's units are in place

    @property
    def moves(self) -> bool:
        """Whether units move at all (the device is not where they wait)."""
        return self.device != self.offload

    def add(self, name: str, unit) -> None:
        """Register a loaded unit (it is moved to where it waits until a stage needs it)."""
        if unit is None:
            return
        self.units[name] = unit
        if self.moves and self.stage is None:
            unit.to(self.offload)

    def held(self, stage: str) -> dict[str, object]:
        """The registered units stage `stage` holds, by name."""
        if stage not in self.stages:
            raise ValueError(f"unknown pipeline stage {stage!r}: expected one of {', '.join(self.stages)}")
        return {n: u for n, u in self.units.items() if n in self.stages[stage]}

    def enter(self, stage: str) -> None:
        """Put stage `stage`'s units on the device and every other unit where units wait."""
        keep = self.held(stage)
        keep_ids = {id(u) for u in keep.values()}
        self._close_record()
        if self.moves:
            for unit in {id(u): u for n, u in self.units.items() if id(u) not in keep_ids}.values():
                unit.to(self.offload)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            for unit in {id(u): u for u in keep.values()}.values():
                unit.to(self.device)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
        self.stage = stage
        states = {n: unit_state(u)[:2] for n, u in self.units.items()}
        weights = sum(unit_state(u)[2] for u in {id(u): u for u in keep.values()}.values())
        self.records.append(StageRecord(stage, sorted(keep), weights, None, states))
        for observe in self.observers:
            observe(stage, self)

    def finish(self) -> list[StageRecord]:
        """Close the last stage's record (its peak) and return every stage's."""
        self._close_record()
        return self.records

    def _close_record(self) -> None:
        if self.records and self.records[-1].peak_bytes is None and self.device.type == "cuda":
            self.records[-1].peak_bytes = int(torch.cuda.max_memory_allocated(self.device))

    def summary(self) -> str:
        """One line per stage: its units' weights (and the measured peak on CUDA)."""
        lines = []
        for r in self.finish():
            peak = f", peak {r.peak_bytes / 2**30:.2f} GiB allocated on {self.device}" if r.peak_bytes is not None else ""
            lines.append(f"  {r.stage:<9} weights {r.weight_bytes / 2**20:,.1f} MiB ({', '.join(r.units) or 'none'}){peak}")
        return "\n".join(lines)
