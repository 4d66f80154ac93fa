"""Stage config: a small YAML file per training run, plus the DeepSpeed JSON it points at.

```yaml
stage: vae
data: data/toyworld            # a shard folder (docs/data_format.md); relative to the working directory
out: runs/vae                  # checkpoints/, log.jsonl, config.resolved.yaml
export: moviedreamer/weights/toy/vae   # final weights (save_pretrained layout); default OUT/export
deepspeed: ../deepspeed/cpu.json       # relative to this file
steps: 3000                    # optimizer steps
save_every: 500
seed: 0
model: {...}                   # the stage's architecture arguments (validated by the stage)
options: {...}                 # the stage's training knobs (validated by the stage)
hardware: {gpus: 8, gpu_memory_gb: 80, params: 6.74e9}   # optional: checked memory plan
```

Everything the optimizer does — ZeRO stage, bf16/fp16, micro batch, gradient accumulation, clipping, optimizer
and LR schedule — lives in the DeepSpeed JSON. `key=value` overrides on the command line change either file:
`steps=10 model.latent_channels=8 ds.zero_optimization.stage=2 ds.optimizer.params.lr=3e-4`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moviedreamer.errors import UserError

STAGE_NAMES = ("vae", "clip", "faces", "tokenizer", "ar", "i2v", "i2v-distill", "presence", "edit")
GB = 1e9  # memory figures are decimal GB (as GPU vendors count them)


class Hardware(BaseModel):
    """The machines a config is written for; the loader checks the memory plan against them."""

    model_config = ConfigDict(extra="forbid")
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(8, ge=1)
    gpu_memory_gb: float = Field(80, gt=0)
    params: float = Field(gt=0, description="trainable parameters")
    frozen_params: float = Field(0, ge=0, description="frozen parameters held in 16-bit on every GPU (e.g. a CLIP encoder)")
    activation_gb: float = Field(0, ge=0, description="activation memory per GPU for one micro batch (estimate or measurement)")
    headroom: float = Field(0.1, ge=0, lt=1, description="fraction kept free for fragmentation, buffers and the CUDA context")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: Literal[STAGE_NAMES]
    data: Path
    out: Path
    export: Path | None = None
    deepspeed: Path
    steps: int = Field(gt=0)
    save_every: int | None = Field(None, gt=0, description="checkpoint every N steps (and always at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, gt=0)
    seed: int = 0
    threads: int | None = Field(None, gt=0, description="torch.set_num_threads in each process")
    deterministic: bool = False
    tensorboard: bool = False
    ema_decay: float | None = Field(None, gt=0, lt=1, description="keep a moving average of the weights (train/ema.py) and export it")
    ema_export: bool = Field(True, description="with ema_decay: export the average (false: the raw weights, e.g. to compare)")
    carry: Path | None = Field(None, description="also write a compact copy of each checkpoint here, to commit: a run that outlives its machine (train/carry.py)")
    model: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    hardware: Hardware | None = None

    # filled by load_config (not YAML fields)
    ds: dict[str, Any] = Field(default_factory=dict, exclude=True)
    source: str = Field("", exclude=True)

    @field_validator("model", "options", mode="before")
    @classmethod
    def _none_is_empty(cls, v):
        return {} if v is None else v

    @property
    def export_dir(self) -> Path:
        return self.export if self.export is not None else self.out / "export"

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    @property
    def zero_stage(self) -> int:
        return int(self.ds.get("zero_optimization", {}).get("stage", 0))

    @property
    def precision(self) -> str:
        for name in ("bf16", "fp16"):
            if self.ds.get(name, {}).get("enabled", False):
                return name
        return "fp32"

    def to_yaml(self) -> str:
        data = json.loads(self.model_dump_json(exclude_none=True))
        return yaml.safe_dump(data, sort_keys=False)


# ----------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StageConfig:
    """Read a stage config and its DeepSpeed JSON, apply `key=value` overrides, validate both."""
    path = Path(path)
    raw = _read_mapping(path, "a stage config (YAML mapping)")
    stage_over, ds_over = split_overrides(overrides)
    for key, value in stage_over:
        set_dotted(raw, key, value, where=f"override {key}")
    if "deepspeed" not in raw:
        raise UserError(f"{path}: expected a 'deepspeed' key naming the DeepSpeed JSON config, found none")
    raw["deepspeed"] = _resolve_near(path, raw["deepspeed"])
    try:
        cfg = StageConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{path}: invalid stage config:\n{format_validation_error(e)}") from None
    ds = _read_mapping(cfg.deepspeed, "a DeepSpeed JSON config (object)", as_json=True)
    for key, value in ds_over:
        set_dotted(ds, key, value, where=f"override ds.{key}")
    cfg.ds = validate_deepspeed(ds, where=str(cfg.deepspeed), steps=cfg.steps)
    cfg.source = str(path)
    if cfg.hardware is not None:
        check_memory_plan(cfg)
    return cfg


def split_overrides(overrides) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """`a.b=1` → stage config; `ds.x.y=2` → DeepSpeed JSON. Values parse as YAML (`8`, `true`, `[16, 32]`)."""
    stage, ds = [], []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"override '{item}': expected KEY=VALUE with a dotted key (e.g. steps=100, ds.zero_optimization.stage=2)")
        value = parse_value(text)
        if key.startswith("ds."):
            ds.append((key[3:], value))
        else:
            stage.append((key, value))
    return stage, ds


def parse_value(text: str) -> Any:
    """YAML scalars and lists, plus the floats YAML 1.1 leaves as strings (`3e-4`)."""
    if not text.strip():
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") and value.lower() not in ("nan", "inf") else value
        except ValueError:
            return value
    return value


def set_dotted(data: dict, key: str, value: Any, where: str = "") -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise UserError(f"{where}: '{'.'.join(parts[: i + 1])}' is a {type(nxt).__name__}, not a mapping; cannot set '{key}'")
        node = nxt
    node[parts[-1]] = value


def format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        found = err.get("input")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {loc}: {msg}" + ("" if err["type"] == "missing" else f" (found {found!r})"))
    return "\n".join(lines)


def _resolve_near(config_path: Path, value) -> Any:
    """A relative DeepSpeed path is looked up next to the stage config first, then in the working directory."""
    if not isinstance(value, (str, Path)):
        return value
    p = Path(value)
    if p.is_absolute():
        return p
    near = config_path.parent / p
    return near if near.exists() or not p.exists() else p


def _read_mapping(path: Path, what: str, as_json: bool = False) -> dict:
    if not path.exists():
        raise UserError(f"{path}: expected {what}, found no such file")
    if not path.is_file():
        raise UserError(f"{path}: expected {what}, found a directory")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if as_json else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}:{e.colno}: expected valid JSON, found {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UserError(f"{where}: expected valid YAML, found {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {what}, found {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------------------------- DeepSpeed JSON

KNOWN_OPTIMIZERS = {"adam", "adamw", "sgd", "lamb", "onebitadam", "zerooneadam", "onebitlamb", "adagrad", "lion", "muadam", "muadamw", "musgd"}
KNOWN_SCHEDULERS = {"LRRangeTest", "OneCycle", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR"}


def validate_deepspeed(ds: dict, where: str, steps: int | None = None) -> dict:
    """Check the parts of a DeepSpeed config the harness relies on, with clear messages; fill `"auto"` step counts."""
    ds = copy.deepcopy(ds)
    problems = []
    micro = ds.get("train_micro_batch_size_per_gpu")
    if not isinstance(micro, int) or isinstance(micro, bool) or micro < 1:
        problems.append(f"train_micro_batch_size_per_gpu: expected a positive integer, found {micro!r}")
    gas = ds.setdefault("gradient_accumulation_steps", 1)
    if not isinstance(gas, int) or isinstance(gas, bool) or gas < 1:
        problems.append(f"gradient_accumulation_steps: expected a positive integer, found {gas!r}")
    zero = ds.get("zero_optimization", {})
    if not isinstance(zero, dict) or zero.get("stage", 0) not in (0, 1, 2, 3):
        problems.append(f"zero_optimization.stage: expected 0, 1, 2 or 3, found {zero.get('stage') if isinstance(zero, dict) else zero!r}")
    if all(isinstance(ds.get(k), dict) and ds[k].get("enabled", False) is True for k in ("bf16", "fp16")):
        problems.append("bf16.enabled and fp16.enabled: expected at most one of them, found both true")
    clip = ds.get("gradient_clipping", 0)
    if not isinstance(clip, (int, float)) or clip < 0:
        problems.append(f"gradient_clipping: expected a number >= 0, found {clip!r}")
    opt = ds.get("optimizer")
    if opt is None:
        problems.append("optimizer: expected {type: Adam|AdamW|..., params: {lr: ...}}, found none (the harness lets DeepSpeed build the optimizer)")
    elif not isinstance(opt, dict) or str(opt.get("type", "")).lower() not in KNOWN_OPTIMIZERS:
        problems.append(f"optimizer.type: expected one of Adam, AdamW, SGD, Lamb, Lion, ..., found {opt.get('type') if isinstance(opt, dict) else opt!r}")
    elif not isinstance(opt.get("params", {}).get("lr"), (int, float)):
        problems.append(f"optimizer.params.lr: expected a number, found {opt.get('params', {}).get('lr')!r}")
    sched = ds.get("scheduler")
    if sched is not None:
        if not isinstance(sched, dict) or sched.get("type") not in KNOWN_SCHEDULERS:
            problems.append(f"scheduler.type: expected one of {', '.join(sorted(KNOWN_SCHEDULERS))}, found {sched.get('type') if isinstance(sched, dict) else sched!r}")
        else:
            params = sched.setdefault("params", {})
            for key in ("total_num_steps", "warmup_num_steps"):
                if params.get(key) == "auto":
                    if steps is None:
                        problems.append(f"scheduler.params.{key}: 'auto' needs the stage config's steps")
                    else:
                        params[key] = steps if key == "total_num_steps" else max(1, steps // 20)
    tbs = ds.get("train_batch_size")
    if tbs is not None and isinstance(micro, int) and isinstance(gas, int) and (not isinstance(tbs, int) or tbs % (micro * gas)):
        problems.append(f"train_batch_size: expected a multiple of micro batch x accumulation = {micro}x{gas}, found {tbs!r}")
    if problems:
        raise UserError(f"{where}: invalid DeepSpeed config:\n" + "\n".join(f"  {p}" for p in problems))
    return ds


def finalize_deepspeed(ds: dict, world_size: int, where: str = "DeepSpeed config") -> dict:
    """Fix `train_batch_size` for the actual number of processes (or check a given one)."""
    ds = copy.deepcopy(ds)
    want = ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * world_size
    given = ds.get("train_batch_size")
    if given is not None and given != want:
        raise UserError(
            f"{where}: train_batch_size {given} does not match micro batch {ds['train_micro_batch_size_per_gpu']} x "
            f"accumulation {ds['gradient_accumulation_steps']} x {world_size} processes = {want}; remove train_batch_size "
            "(the harness computes it) or make them agree"
        )
    ds["train_batch_size"] = want
    return ds


# ----------------------------------------------------------------------------------------------- memory plan


def model_state_bytes_per_gpu(params: float, zero_stage: int, world_size: int, precision: str = "bf16") -> dict:
    """ZeRO paper arithmetic (Rajbhandari et al. 2020, §3) for Adam.

    Mixed precision (bf16/fp16): 2 bytes/param for weights, 2 for gradients, K = 12 for optimizer state
    (fp32 master weights 4 + Adam m 4 + v 4). fp32: 4 + 4 + 8. ZeRO-1 shards the optimizer state over N GPUs,
    ZeRO-2 also the gradients, ZeRO-3 also the weights.
    """
    w, g, k = (2, 2, 12) if precision in ("bf16", "fp16") else (4, 4, 8)
    n = world_size
    shard = {0: (1, 1, 1), 1: (1, 1, n), 2: (1, n, n), 3: (n, n, n)}[zero_stage]
    parts = {"weights": params * w / shard[0], "gradients": params * g / shard[1], "optimizer": params * k / shard[2]}
    parts["total"] = sum(parts.values())
    return parts


def memory_plan(cfg: StageConfig) -> dict:
    hw = cfg.hardware
    states = model_state_bytes_per_gpu(hw.params, cfg.zero_stage, hw.world_size, cfg.precision)
    frozen = hw.frozen_params * (2 if cfg.precision != "fp32" else 4)
    need = states["total"] + frozen + hw.activation_gb * GB
    budget = hw.gpu_memory_gb * GB * (1 - hw.headroom)
    return {
        "zero_stage": cfg.zero_stage,
        "precision": cfg.precision,
        "world_size": hw.world_size,
        "params": hw.params,
        "weights_gb": states["weights"] / GB,
        "gradients_gb": states["gradients"] / GB,
        "optimizer_gb": states["optimizer"] / GB,
        "model_states_gb": states["total"] / GB,
        "frozen_gb": frozen / GB,
        "activation_gb": hw.activation_gb,
        "total_gb": need / GB,
        "budget_gb": budget / GB,
        "fits": need <= budget,
    }


def format_memory_plan(plan: dict) -> str:
    return (
        f"memory per GPU (ZeRO-{plan['zero_stage']}, {plan['precision']}, {plan['world_size']} GPUs, {plan['params'] / 1e9:.2f}B trainable params): "
        f"weights {plan['weights_gb']:.2f} + gradients {plan['gradients_gb']:.2f} + optimizer {plan['optimizer_gb']:.2f} "
        f"= model states {plan['model_states_gb']:.2f} GB; + frozen {plan['frozen_gb']:.2f} + activations {plan['activation_gb']:.2f} "
        f"= {plan['total_gb']:.2f} GB of {plan['budget_gb']:.1f} GB usable"
    )


def check_memory_plan(cfg: StageConfig) -> dict:
    plan = memory_plan(cfg)
    if not plan["fits"]:
        raise UserError(
            f"{cfg.source or 'stage config'}: the memory plan does not fit: {format_memory_plan(plan)}. "
            "Raise the ZeRO stage, use bf16, add GPUs, or lower the micro batch (activation_gb)."
        )
    return plan
