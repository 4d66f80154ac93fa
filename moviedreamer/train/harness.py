"""The training loop every stage shares, built on `deepspeed.initialize`.

    config ─► stage (model, samples, collate, loss, export)
           ─► deepspeed.initialize (ZeRO, bf16/fp16, accumulation, clipping, optimizer, LR schedule: the JSON)
           ─► loop: for each micro batch: seed (seed, rank, step, micro) → batch → loss → engine.backward/step
                    every log_every: metrics averaged over ranks → tqdm bar, OUT/log.jsonl, TensorBoard
                    every save_every and at the end: engine.save_checkpoint + per-rank trainer state
           ─► export: full weights gathered (ZeRO-3 too) into a fresh model → stage.export(save_pretrained layout)

Exact resume: the data stream's state is saved with each checkpoint, the optimizer/scheduler state by DeepSpeed,
and all randomness of a step (augmentation, VAE sampling, dropout) is drawn from a generator re-seeded from
(seed, rank, step, micro batch), so a resumed run repeats an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from pydantic import ValidationError
from tqdm import tqdm

from moviedreamer.errors import UserError
from moviedreamer.train import carry, dist
from moviedreamer.train.config import StageConfig, finalize_deepspeed, format_validation_error
from moviedreamer.train.data import EpisodeStream, ShardIndex
from moviedreamer.train.ema import WeightAverage
from moviedreamer.train.stages import load_stage

KILL_ENV = "MOVIEDREAMER_TRAIN_KILL_AT_STEP"  # testing hook: SIGKILL this process right after step N
STATE_FILE = "trainer_state_rank{rank}.json"
CARRIED = ":carried"  # the tag check_checkpoint_dir gives a carry folder


class Stage:
    """What a stage module provides (subclass it; `STAGE = MyStage` at module level)."""

    name = "?"
    keys: tuple[str, ...] | None = None  # episode tensors to read (None: all)
    mix = 4  # episodes open at a time in the stream

    def __init__(self, cfg: StageConfig):
        self.cfg = cfg

    def parse_sections(self, model_cls, options_cls):
        """The config's `model:` and `options:` validated by the stage's pydantic classes; a clear UserError if not."""
        try:
            return model_cls.model_validate(self.cfg.model), options_cls.model_validate(self.cfg.options)
        except ValidationError as e:
            where = self.cfg.source or "stage config"
            raise UserError(f"{where}: invalid {self.name} model/options:\n{format_validation_error(e)}") from None

    def build_model(self):
        raise NotImplementedError

    def trainable_parameters(self, model) -> Iterable:
        return [p for p in model.parameters() if p.requires_grad]

    def after_initialize(self, engine, world_size: int) -> None:
        """Called once the engine exists (weights broadcast, optimizer built): e.g. a change of memory layout."""

    def samples(self, episode: dict, rng) -> list:
        """One episode (tensors from the shard + `meta`) → its training samples."""
        raise NotImplementedError

    def collate(self, samples: list, device, dtype) -> Any:
        raise NotImplementedError

    def loss(self, model, batch) -> tuple[Any, dict[str, float]]:
        """(scalar loss tensor, metrics as floats)."""
        raise NotImplementedError

    def export(self, model, out_dir: Path, stream: EpisodeStream) -> dict:
        """Write the component in its `save_pretrained` layout; return figures worth recording."""
        raise NotImplementedError


def step_seed(seed: int, rank: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step * 131 + micro) % (2**63 - 1)


def check_checkpoint_dir(cfg: StageConfig, resume: str | None) -> tuple[Path, str] | None:
    """Where to resume from: None (fresh), (checkpoint root, tag), or (carry folder, CARRIED) for a compact carried
    copy (train/carry.py) — what `--resume` falls back to when OUT holds no checkpoint but the config's `carry` does.
    Refuses to overwrite a run silently."""
    root = cfg.checkpoint_dir
    latest = root / "latest"
    if resume is None:
        if latest.exists():
            raise UserError(
                f"{root} already holds a run (latest: {latest.read_text().strip()}): pass --resume to continue it, "
                f"or choose another output folder (out=...)"
            )
        if cfg.carry is not None and carry.is_carry(cfg.carry):
            raise UserError(f"{cfg.carry} (the config's carry) holds a run: pass --resume to continue it, or set carry=... to another folder")
        return None
    if resume == "latest":
        if not latest.exists():
            if cfg.carry is not None and carry.is_carry(cfg.carry):
                return cfg.carry, CARRIED
            raise UserError(f"--resume: expected a checkpoint in {root} (a 'latest' file), found none; start without --resume")
        tag = latest.read_text().strip()
        path = root / tag
    else:
        path = Path(resume)
        if carry.is_carry(path):
            return path, CARRIED
        root, tag = path.parent, path.name
    if not (path / STATE_FILE.format(rank=0)).is_file():
        raise UserError(f"--resume: expected a complete checkpoint folder at {path} (with {STATE_FILE.format(rank=0)}), found none")
    return root, tag


def train(cfg: StageConfig, resume: str | None = None) -> dict:
    """Run a stage. A run without a launcher sets up its own one-process group and the env:// variables for it;
    afterwards the variables are restored, so a child process started later does not inherit a MASTER_PORT this
    process still holds. The group itself stays (DeepSpeed's comm layer keeps it; a later run here reuses it)."""
    saved = {k: os.environ.get(k) for k in dist.ENV_VARS}
    try:
        return _train(cfg, resume)
    finally:
        if saved["RANK"] is None or saved["WORLD_SIZE"] is None:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _train(cfg: StageConfig, resume: str | None) -> dict:
    stage = load_stage(cfg.stage)(cfg)  # validates model/options before anything heavy starts
    index = ShardIndex(cfg.data)
    resume_from = check_checkpoint_dir(cfg, resume)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    t0 = time.time()
    info = dist.init_distributed()
    # deepspeed is heavy: loaded only when training
    import deepspeed

    if os.environ.get("MOVIEDREAMER_DS_VERBOSE") != "1":
        # DeepSpeed's ZeRO calls torch.distributed collectives that torch marks deprecated, every step
        warnings.filterwarnings("ignore", message=r".*torch\.distributed\.\w+` is deprecated", category=FutureWarning)
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        deepspeed.utils.logger.setLevel(logging.WARNING)
    ds_cfg = finalize_deepspeed(cfg.ds, info.world_size, str(cfg.deepspeed))
    ds_cfg.setdefault("steps_per_print", 10**9)

    torch.manual_seed(cfg.seed)
    model = stage.build_model()
    params = [p for p in stage.trainable_parameters(model)]
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=ds_cfg)
    stage.after_initialize(engine, info.world_size)
    average = None
    if cfg.ema_decay:
        if cfg.zero_stage == 3:
            raise UserError(f"{cfg.source or 'stage config'}: ema_decay needs whole parameters on every rank (ZeRO stage 0-2), found stage 3")
        average = WeightAverage(engine.module, cfg.ema_decay)
    init_s = time.time() - t0  # process group + engine (model build included)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16 if cfg.precision == "fp16" else torch.float32
    stream = EpisodeStream(index, stage.samples, stage.keys, info.rank, info.world_size, cfg.seed, stage.mix)

    rewarm = None
    if resume_from is not None and resume_from[1] == CARRIED:
        carry.restore(engine, stream, average, resume_from[0], info)
        rewarm = carry.Rewarm(engine)
    elif resume_from is not None:
        root, tag = resume_from
        state = json.loads((root / tag / STATE_FILE.format(rank=info.rank)).read_text())
        if state["world_size"] != info.world_size:
            raise UserError(f"{root / tag}: written by {state['world_size']} processes, resumed with {info.world_size}; resume with the same number")
        load_path, _ = engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
        if load_path is None:
            raise UserError(f"--resume: DeepSpeed could not load {root / tag}")
        stream.load_state_dict(state["data"])
        if engine.global_steps != state["step"]:
            raise UserError(f"{root / tag}: DeepSpeed restored step {engine.global_steps}, the trainer state says {state['step']}")
        if average is not None and not average.load(root / tag):
            print(f"note: {root / tag} holds no weight average; it starts now, at step {engine.global_steps}", file=sys.stderr)

    if resume_from is not None and cfg.carry is not None and carry.carried_step(cfg.carry) < engine.global_steps:
        # a run that gains a carry folder on resume (or whose folder is older) gets one now, not only at its next save
        carry.write(engine, stream, average, cfg.carry, info, engine.global_steps, source=str(Path(resume_from[0]) / resume_from[1]))

    out = cfg.out
    logger = MetricLogger(out, cfg.tensorboard) if info.is_main else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.resolved.yaml").write_text(cfg.to_yaml())
        (out / "deepspeed.resolved.json").write_text(json.dumps(ds_cfg, indent=2))
        logger.write({"event": "start" if resume_from is None else "resume", "step": engine.global_steps, "world_size": info.world_size,
                      "backend": info.backend, "deepspeed_init_s": round(init_s, 2), "time": time.time()})
    bar = make_bar(cfg.steps, engine.global_steps, info.is_main)
    gas = engine.gradient_accumulation_steps()
    micro_batch = engine.train_micro_batch_size_per_gpu()
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    start_step, t_start = engine.global_steps, time.time()
    window_t, window_steps, sums, count = time.time(), 0, {}, 0
    last_saved = engine.global_steps if resume_from is not None else -1
    engine.train()

    while engine.global_steps < cfg.steps:
        step = engine.global_steps
        for micro in range(gas):
            s = step_seed(cfg.seed, info.rank, step, micro)
            torch.manual_seed(s)
            random.seed(s)
            batch = stage.collate(stream.take(micro_batch), engine.device, dtype)
            loss, metrics = stage.loss(engine, batch)
            engine.backward(loss)
            engine.step()
            for k, v in {"loss": float(loss.detach()), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
        if average is not None:
            average.step()
        if rewarm is not None:
            rewarm.apply()
        done = engine.global_steps
        window_steps += 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            avg = dist.all_reduce_mean({k: v / count for k, v in sums.items()}, info.world_size)
            now = time.time()
            rate = window_steps / max(now - window_t, 1e-9)
            if info.is_main:
                record = {"step": done, "epoch": stream.epoch, **{k: round(v, 6) for k, v in avg.items()}, "lr": engine.get_lr()[0],
                          "samples": done * micro_batch * gas * info.world_size, "steps_per_s": round(rate, 4),
                          "elapsed_s": round(now - t_start, 2), "eta_s": round((cfg.steps - done) / max(rate, 1e-9), 1)}
                logger.write(record)
                bar.set_postfix(loss=f"{avg['loss']:.4f}", refresh=False)
            window_t, window_steps, sums, count = now, 0, {}, 0
        bar.update(1)
        if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
            save_checkpoint(engine, stream, cfg, info, done, average)
            last_saved = done
        if kill_at and done == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash, as from the OOM killer or a lost node
    bar.close()
    if last_saved != engine.global_steps:
        save_checkpoint(engine, stream, cfg, info, engine.global_steps, average)

    figures = export(engine, stage, cfg, info, index, average if cfg.ema_export else None)
    summary = {"event": "done", "step": engine.global_steps, "elapsed_s": round(time.time() - t_start, 2),
               "steps_run": engine.global_steps - start_step, "export": str(cfg.export_dir), **figures}
    if info.is_main:
        logger.write(summary)
        logger.close()
    dist.barrier()
    return summary


# ----------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(engine, stream: EpisodeStream, cfg: StageConfig, info, step: int, average: WeightAverage | None = None) -> None:
    """Per-rank trainer state and the weight average first, then DeepSpeed's files; DeepSpeed writes `latest` last,
    so a checkpoint named by `latest` is complete."""
    tag = f"step-{step:07d}"
    folder = cfg.checkpoint_dir / tag
    folder.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "rank": info.rank, "world_size": info.world_size, "data": stream.state_dict(), "seed": cfg.seed}
    _write_atomic(folder / STATE_FILE.format(rank=info.rank), json.dumps(state))
    if average is not None and info.is_main:
        average.save(folder)
    dist.barrier()
    engine.save_checkpoint(str(cfg.checkpoint_dir), tag=tag, client_state={"moviedreamer_step": step})
    dist.barrier()
    if cfg.carry is not None:
        carry.write(engine, stream, average, cfg.carry, info, step, source=str(folder))
    if info.is_main:
        tags = sorted(p for p in cfg.checkpoint_dir.glob("step-*") if p.is_dir())
        for old in tags[: -cfg.keep_checkpoints]:
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- export


def full_state_dict(engine, zero_stage: int, is_main: bool) -> dict | None:
    """The whole model's weights on rank 0 (CPU), gathering ZeRO-3 partitions one parameter at a time."""
    module = engine.module
    if zero_stage == 3:
        # deepspeed is heavy: loaded only when training
        import deepspeed

        sd = {}
        for name, p in module.named_parameters():
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                if is_main:
                    sd[name] = p.data.detach().cpu().clone()
        if is_main:
            sd.update({n: b.detach().cpu().clone() for n, b in module.named_buffers()})
        return sd if is_main else None
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if is_main else None


def export(engine, stage: Stage, cfg: StageConfig, info, index: ShardIndex, average: WeightAverage | None = None) -> dict:
    """Write the final weights (the moving average's, when given) through the stage into cfg.export_dir (swapped in
    whole, never half-written)."""
    sd = full_state_dict(engine, cfg.zero_stage, info.is_main)
    if sd is not None and average is not None:
        sd.update(average.state())
    figures: dict = {}
    if info.is_main:
        torch.manual_seed(cfg.seed)
        fresh = stage.build_model()
        target = fresh.state_dict()
        missing = set(target) - set(sd)
        if missing:
            raise RuntimeError(f"export: weights missing from the trained model: {sorted(missing)[:5]}")
        fresh.load_state_dict({k: sd[k].to(target[k].dtype) for k in target})
        fresh.eval()
        dest = cfg.export_dir
        tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        stream = EpisodeStream(index, stage.samples, stage.keys, 0, 1, cfg.seed + 1, stage.mix)
        with torch.no_grad():
            figures = dict(stage.export(fresh, tmp, stream) or {})
        (tmp / "moviedreamer_train.json").write_text(json.dumps(
            {"stage": cfg.stage, "steps": engine.global_steps, "config": json.loads(cfg.model_dump_json(exclude_none=True)),
             "deepspeed": cfg.ds, "data": str(cfg.data), "figures": figures,
             "weights": f"moving average of {average.steps} steps" if average is not None else "raw"}, indent=2, default=str))
        old = dest.with_name(dest.name + f".old-{os.getpid()}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return figures


# ----------------------------------------------------------------------------------------------- logging


class MetricLogger:
    """OUT/log.jsonl (one JSON object per line, appended across resumes) and, if asked and installed, TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool):
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "log.jsonl", "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                print("note: tensorboard is not installed; metrics go to log.jsonl only (pip install tensorboard)", file=sys.stderr)

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in record and "event" not in record:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def make_bar(total: int, initial: int, enabled: bool):
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=not enabled or os.environ.get("MOVIEDREAMER_NO_BAR") == "1",
                unit="step", dynamic_ncols=True, mininterval=0.5 if tty else 30, smoothing=0.1)
