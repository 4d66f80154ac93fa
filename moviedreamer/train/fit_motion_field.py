"""`moviedreamer train motion-field`: the toy clip model's motion field (video/motion_field.py) on segments rendered on
the fly, stored in the clip model's folder.

The toy world renders, for any frame, where each of its pixels was in an earlier frame (toyworld/render.py
`source=`), so every sample is exact: a random shot (catalogue or composed cast, any action, framing and camera
move), a random segment start s, the frame s as the conditioning frame and the maps of frames s + 1 ... s + frames - 1
back to it with what of them was in view there; the text is the shot's "{action}. {camera}" written as the story
grammar writes it, and (`--shot-time`) the segment's start and the shot's length. One worker process renders into a
queue while the trainer fits; L1 on the displacements, moving pixels weighted up (most pixels are still, and a model
that moves nothing is otherwise a cheap minimum) and the characters' own motion more (`--own-weight`: a camera move
shifts every pixel and would drown them), plus the visibility's cross-entropy. Resumable (OUT/checkpoint/state.pt).

    moviedreamer train motion-field --out runs/toy-mf --steps 3500 --shot-time --own-weight 20
    moviedreamer train motion-field --out runs/toy-mf-2 --shot-time --init runs/toy-mf/checkpoint/state.pt   # grown from it
    moviedreamer train motion-field --out runs/toy-mf --steps 3500 --shot-time --export runs/toy-i2v-jam/export   # into a clip model folder
"""

from __future__ import annotations

import argparse
import re
import shutil
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.errors import UserError
from moviedreamer.train.fitting import cosine_lr, log_record, resume_state, save_state
from moviedreamer.toyworld.grammar import write_action, write_camera
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import CHARACTER_BY_ID, CHARACTER_IDS, NAMES, SCENE_IDS, random_cast
from moviedreamer.video.motion_field import FOLDER, MotionField, MotionFieldConfig

RENDER = 128  # the frames are rendered at the clip model's size and area-resampled to the model's
LONG_SHOTS = 0.2  # this share of the segments come from shots of 7-30 s (the rest 3-6 s, as the toy stories write)


def sample_segment(rng: np.random.Generator, frames: int, fps: int = 8, composed: float = 0.5, with_params: bool = False,
                   long_shots: float = 0.0):
    """(frame uint8 [H, W, 3], displacements float32 [frames - 1, H, W, 2] in px at RENDER, visibility bool
    [frames - 1, H, W], text, seconds since the shot began at the frame, the shot's length in seconds) of a random
    segment, from a shot of 3-6 s or, in a `long_shots` share, of 7-30 s; `with_params`: the shot's ShotParams appended
    (benches group by them)."""
    scene = str(rng.choice(SCENE_IDS))
    duration = float(rng.uniform(7, 30)) if long_shots and rng.random() < long_shots else float(rng.integers(3, 7))
    cast = random_cast(rng, 3) if rng.random() < composed else list(CHARACTER_IDS)
    p = random_shot(rng, scene, cast, duration, layout_seed=int(rng.integers(2**31)))
    start = int(rng.integers(0, max(1, int(duration * fps) - frames + 1))) if rng.random() > 0.3 else 0
    first = render_frame(p, start, fps, (RENDER, RENDER)).image
    grid = np.stack(np.meshgrid(np.arange(RENDER, dtype=np.float32), np.arange(RENDER, dtype=np.float32)), axis=-1)
    later = [render_frame(p, start + k, fps, (RENDER, RENDER), source=start) for k in range(1, frames)]
    maps = np.stack([f.source - grid for f in later])
    seen = np.stack([f.source_visible for f in later])
    names = [CHARACTER_BY_ID[c].name if c in CHARACTER_BY_ID else str(NAMES[int(rng.integers(len(NAMES)))]) for c in p.characters]
    text = f"{write_action(p, names, rng)}. {write_camera(p, rng)}"
    out = (first, maps, seen, text, np.float32(start / fps), np.float32(duration))
    return out + (p,) if with_params else out


class _Segments(torch.utils.data.IterableDataset):
    def __init__(self, seed: int, start_step: int, frames: int, chunk: int = 16):
        self.seed, self.start_step, self.frames, self.chunk = seed, start_step, frames, chunk

    def __iter__(self):
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.start_step, 13])
        while True:
            items = [sample_segment(rng, self.frames, long_shots=LONG_SHOTS) for _ in range(self.chunk)]
            yield tuple(torch.from_numpy(np.stack([i[k] for i in items])) for k in range(3)) + ([i[3] for i in items], torch.tensor([i[4] for i in items]), torch.tensor([i[5] for i in items]))


def to_model(frames: torch.Tensor, maps: torch.Tensor, seen: torch.Tensor, size: int, scale: float, flip: torch.Tensor | None = None):
    """uint8 frames [B, H, W, 3], maps [B, T, H, W, 2] (px at H) and visibility [B, T, H, W] -> the model's input
    [B, 3, s, s] in [-1, 1] and target [B, T, 3, s, s] (x, y in units of `scale` px at s; the share of each pixel in
    view); the rows in `flip` [B] mirrored (x displacement negated; their texts must say left for right: `mirror_text`)."""
    x = F.interpolate(frames.permute(0, 3, 1, 2).float() / 127.5 - 1, size=(size, size), mode="area")
    b, t, h = maps.shape[:3]
    target = torch.cat([maps.permute(0, 1, 4, 2, 3).float() * (size / h) / scale, seen[:, :, None].float()], dim=2)
    y = F.interpolate(target.flatten(0, 1), size=(size, size), mode="area").view(b, t, 3, size, size)
    if flip is not None and bool(flip.any()):
        x[flip] = x[flip].flip(-1)
        y[flip] = y[flip].flip(-1) * torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    return x, y


def mirror_text(text: str) -> str:
    """The shot text of the mirrored picture: left and right swapped."""
    return re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left", text)


def field_loss(pred: torch.Tensor, target: torch.Tensor, moving_weight: float, seen_weight: float = 0.5,
               own_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """L1 on displacements, pixels that move (> 0.25 units) weighted 1 + moving_weight, and those that move against
    the frame's median (the characters' own motion: a camera move shifts every pixel, and most pixels are scenery)
    + own_weight more; + seen_weight x the visibility's binary cross-entropy."""
    pred = pred.float()
    d, dt = pred[:, :, :2], target[:, :, :2]
    moving = (dt.norm(dim=2, keepdim=True) > 0.25).float()
    err = (d - dt).abs()
    w = 1 + moving_weight * moving
    scenery = dt.flatten(3).median(dim=3).values[..., None, None]
    own = ((dt - scenery).norm(dim=2, keepdim=True) > 0.25).float()
    w = w + own_weight * own
    loss = (err * w).sum() / (w.sum() * 2)
    bce = F.binary_cross_entropy_with_logits(pred[:, :, 2], target[:, :, 2])
    with torch.no_grad():  # end-point error on moving pixels, in model units; visibility read right
        epe = (err.norm(dim=2, keepdim=True) * moving).sum() / moving.sum().clamp_min(1)
        epe_own = (err.norm(dim=2, keepdim=True) * own).sum() / own.sum().clamp_min(1)
        seen_acc = ((pred[:, :, 2] > 0) == (target[:, :, 2] > 0.5)).float().mean()
    return loss + seen_weight * bce, {"epe_moving": float(epe), "epe_own": float(epe_own), "seen_acc": float(seen_acc)}


def load_encoder(path: str | Path):
    """The descriptor encoder (e.g. the toy CLIP's folder) the field reads the shot's text with."""
    from moviedreamer.encoders.longclip import load_descriptor_encoder

    return load_descriptor_encoder(path)


def train_motion_field(out_dir: str | Path, encoder_path: str | Path | None, steps: int = 6000, batch: int = 16, lr: float = 1e-3, seed: int = 0,
                       threads: int = 1, config: MotionFieldConfig | None = None, moving_weight: float = 4.0, log_every: int = 50,
                       ckpt_every: int = 250, export: str | Path | None = None, resume: bool = True, sigma: float | None = None,
                       carry: str | Path | None = None, init: str | Path | None = None, own_weight: float = 0.0) -> dict:
    """Train (or resume) into out_dir; the model goes to out_dir/motion_field and, with `export` (a clip model
    folder), to export/motion_field too, with `sigma` as that model's motion_field_sigma. A `steps` the checkpoint has
    reached only exports. `carry`: a folder (committed) that receives a copy of each checkpoint, and that a run
    without one of its own resumes from (a new machine). `init`: a fresh run starts from this checkpoint's weights
    (a state.pt), grown to this config's inputs (`MotionField.load_grown`, e.g. adding `shot_time`)."""
    torch.set_num_threads(threads)
    out = Path(out_dir)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    ckpt, log = out / "checkpoint" / "state.pt", out / "train.log"
    cfg = config or MotionFieldConfig()
    encoder = None
    if cfg.reader == "toy-vocabulary":
        from moviedreamer.toyworld.grammar import MOTION_LABELS

        cfg.text_dim, cfg.words, cfg.descriptor_encoder = len(MOTION_LABELS), 0, ""
    else:
        if encoder_path is None:
            raise UserError("motion field: the descriptor reader needs --encoder (the clip model's text encoder folder)")
        encoder = load_encoder(encoder_path)
        cfg.text_dim, cfg.descriptor_encoder = int(encoder.embed_dim), str(encoder_path)
    torch.manual_seed(seed)
    model = MotionField(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    carried = Path(carry) / "state.pt" if carry else None
    source = ckpt if ckpt.is_file() or carried is None else carried
    step, seconds = resume_state(source, model, opt) if resume else (0, 0.0)
    if step == 0 and init is not None:
        model.load_grown(torch.load(init, map_location="cpu", weights_only=True)["model"])
        log_record(log, {"initialised_from": str(init)})
    start_step = step
    if step:
        log_record(log, {"resumed_at": step})
    loader = torch.utils.data.DataLoader(_Segments(seed, step, cfg.frames), batch_size=None, num_workers=1, prefetch_factor=4) if step < steps else None
    chunks = iter(loader) if loader is not None else None
    texts: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    pool: list = []
    running, t0 = {"loss": 0.0, "epe_moving": 0.0, "epe_own": 0.0, "seen_acc": 0.0, "n": 0}, time.time()
    model.train()
    while step < steps:
        while len(pool) < batch:
            f, m, v, t, s, d = next(chunks)
            pool += [(f[i], m[i], v[i], t[i], s[i], d[i]) for i in range(len(t))]
        items, pool = pool[:batch], pool[batch:]
        flip = torch.rand(len(items), generator=gen) < 0.5
        x, y = to_model(*(torch.stack([i[k] for i in items]) for k in range(3)), cfg.size, cfg.scale, flip)
        words = [mirror_text(i[3]) if f else i[3] for i, f in zip(items, flip.tolist())]
        todo = list(dict.fromkeys(t for t in words if t not in texts))
        if todo:
            with torch.no_grad():
                for t, s in zip(todo, model.text_states(encoder, todo)):
                    texts[t] = s
        states = model.with_time(torch.stack([texts[t] for t in words]), torch.stack([i[4] for i in items]), torch.stack([i[5] for i in items]))
        loss, logs = field_loss(model(x, states), y, moving_weight, own_weight=own_weight)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, floor=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        running["loss"] += loss.item()
        running["epe_moving"] += logs["epe_moving"] * cfg.scale
        running["epe_own"] += logs["epe_own"] * cfg.scale
        running["seen_acc"] += logs["seen_acc"]
        running["n"] += 1
        if step % log_every == 0 or step == steps:
            n = running.pop("n")
            log_record(log, {"step": step, **{k: round(v / n, 4) for k, v in running.items()}, "lr": round(cosine_lr(step - 1, steps, lr, floor=0.05), 6),
                       "train_minutes": round((seconds + time.time() - t0) / 60, 1)})
            running = {k: 0.0 for k in running} | {"n": 0}
        if step % ckpt_every == 0 or step == steps:
            save_state(ckpt, model, opt, step, seconds + time.time() - t0)
            if carried is not None:
                carried.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ckpt, carried.with_name("state.pt.tmp"))
                os.replace(carried.with_name("state.pt.tmp"), carried)
    seconds += time.time() - t0
    chunks = loader = None  # stops the render worker
    model.config.trained_steps = step
    model.eval().save(out / FOLDER)
    if export is not None:  # into a clip model's folder, used from `sigma` on (I2VSettings.motion_field_sigma)
        folder = Path(export) / FOLDER
        if encoder_path is not None and cfg.reader == "descriptor":
            model.config.descriptor_encoder = os.path.relpath(Path(encoder_path).resolve(), folder.resolve())
        model.save(folder)
        if sigma is not None:
            settings_file = Path(export) / "moviedreamer_i2v.json"
            settings = json.loads(settings_file.read_text())
            settings["motion_field_sigma"] = sigma
            settings_file.write_text(json.dumps(settings, indent=2) + "\n")
    info = {"steps": step, "train_minutes": round(seconds / 60, 1)}
    log_record(log, {"final": {**info, "batch": batch, "lr": lr}} if step > start_step else {"exported_at": step})
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="moviedreamer train motion-field", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="run folder: checkpoint/, train.log and the trained motion_field/")
    p.add_argument("--reader", choices=["toy-vocabulary", "descriptor"], default="toy-vocabulary", help="what the field reads of the shot text")
    p.add_argument("--encoder", help="descriptor reader: the text encoder folder (the clip model's: e.g. its image_encoder/)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--words", type=int, default=24, help="descriptor reader: per-word states read")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64], help="the UNet's block_out_channels (multiples of 16)")
    p.add_argument("--export", help="also store it in this clip model folder (as motion_field/)")
    p.add_argument("--sigma", type=float, help="with --export: the clip model samples from the warped frames at this noise level (0: as warped)")
    p.add_argument("--carry", help="a folder that keeps a copy of each checkpoint (committed), resumed from on a new machine")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--shot-time", action="store_true", help="the field also reads the time since the shot began (an action's phase)")
    p.add_argument("--own-weight", type=float, default=0.0, help="extra loss weight on pixels that move against the scenery (characters)")
    p.add_argument("--init", help="a fresh run starts from this checkpoint (state.pt), grown to the new inputs (e.g. --shot-time)")
    a = p.parse_args(argv)
    if a.encoder is not None and not Path(a.encoder).is_dir():
        raise UserError(f"--encoder {a.encoder}: not a folder")
    cfg = MotionFieldConfig(reader=a.reader, size=a.size, words=a.words, block_out_channels=list(a.channels), shot_time=a.shot_time)
    if a.export is not None and not (Path(a.export) / "moviedreamer_i2v.json").is_file():
        raise UserError(f"--export {a.export}: not a clip model folder (no moviedreamer_i2v.json)")
    train_motion_field(a.out, a.encoder, a.steps, a.batch, a.lr, a.seed, a.threads, cfg, export=a.export, resume=not a.no_resume, sigma=a.sigma, carry=a.carry, init=a.init, own_weight=a.own_weight)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
