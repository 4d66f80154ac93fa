"""`moviedreamer train motion-prior --data SHARDS --model I2V_FOLDER`: fit the shot-text -> motion prior
(video/motion_prior.py) on the clips of training shards and store it in the i2v folder. A closed-form ridge fit, not
a gradient model, so it runs without DeepSpeed (like `train text-tokenizer`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from moviedreamer.errors import UserError
from moviedreamer.metrics import motion_magnitude
from moviedreamer.pipeline.profile import Profile
from moviedreamer.script.shot_text import script_shot_texts
from moviedreamer.train.data import ShardIndex
from moviedreamer.vae import read_json
from moviedreamer.video.conditioning import descriptor_inputs
from moviedreamer.video.model import SETTINGS_FILE, I2VSettings
from moviedreamer.video.motion_prior import MotionPrior, PriorConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moviedreamer train motion-prior", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="training shards with clips and their scripts (docs/data_format.md)")
    p.add_argument("--model", type=Path, required=True, help="the i2v folder the prior belongs to (written as motion_prior.safetensors)")
    p.add_argument("--profile", default=None, help="checkpoints profile whose descriptor_encoder reads the texts (default: toy)")
    p.add_argument("--words", type=int, default=24, help="per-word states after the pooled embedding (default 24)")
    p.add_argument("--ridge", type=float, default=1000.0, help="L2 strength on the standardised features (default 1000)")
    p.add_argument("--max-clips", type=int, default=3000, help="at most this many clips (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="which tenth is held out for the printed correlation")
    return p


def clip_texts_and_motion(data: Path, template: str, frames: int, max_clips: int):
    """(texts, motion px/frame, width) of the shards' clips: the template filled with the episode script's phrases,
    DIS motion over the first `frames` frames (what one segment shows)."""
    index, texts, motion, width = ShardIndex(data), [], [], 0
    with tqdm(total=max_clips, desc="measuring clip motion", unit="clip") as bar:
        for i in range(len(index)):
            ep = index.load(i, ("clips",))
            script = script_shot_texts(index.path(i, ".yaml"), template)
            if script is None:
                continue
            clips = ep["clips"].numpy()
            width = clips.shape[3]
            for s in range(min(len(clips), len(script))):
                texts.append(script[s])
                motion.append(motion_magnitude(clips[s, :frames]))
                bar.update()
                if len(texts) == max_clips:
                    return texts, np.array(motion), width
    return texts, np.array(motion), width


def fit(args) -> dict:
    if not (args.model / SETTINGS_FILE).is_file():
        raise UserError(f"--model {args.model}: expected an i2v folder made by `moviedreamer train i2v` (with {SETTINGS_FILE}), found none")
    settings = I2VSettings.from_dict(read_json(args.model / SETTINGS_FILE))
    texts, motion, width = clip_texts_and_motion(args.data, settings.descriptor_template, settings.num_frames, args.max_clips)
    if len(texts) < 10:
        raise UserError(f"{args.data}: found {len(texts)} clips with scripts beside their shards; the motion prior needs at least 10")
    encoder = Profile.load(args.profile or "toy").descriptor
    config = PriorConfig(words=args.words, ridge=args.ridge, width=int(width), template=settings.descriptor_template)
    feats = torch.cat([descriptor_inputs(encoder, texts[i : i + 256], config.words) for i in range(0, len(texts), 256)])
    held = np.random.default_rng(args.seed).permutation(len(texts))[: max(2, len(texts) // 10)]
    train = np.setdiff1d(np.arange(len(texts)), held)
    split = MotionPrior.fit(feats[train], motion[train], config)
    pred = split.log_motion(feats[held]).numpy()
    config.heldout_corr = round(float(np.corrcoef(pred, np.log(motion[held] + config.offset))[0, 1]), 4)
    config.fitted_on = len(texts)
    path = MotionPrior.fit(feats, motion, config).save(args.model)
    return {"clips": len(texts), "heldout_corr": config.heldout_corr, "path": str(path), "median": float(np.median(motion))}


def run(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args([str(a) for a in (argv or [])])
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    if args.words < 0 or args.ridge <= 0 or args.max_clips < 10:
        raise UserError(f"expected --words >= 0, --ridge > 0 and --max-clips >= 10, found {args.words}, {args.ridge}, {args.max_clips}")
    info = fit(args)
    print(f"motion prior: {info['clips']} clips (median {info['median']:.2f} px/frame), held-out correlation of the log motion "
          f"{info['heldout_corr']:.3f} -> {info['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
