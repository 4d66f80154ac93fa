"""The clip model's loss per noise level, on the frame it is given and on the frames it has to invent.

The loss a training run logs averages over noise levels drawn from its log-normal; at small sigma the target is
mostly the noise itself, which no conditioning can reveal, and that part dominates the average. Per level it shows
whether the model uses the conditioning frame (a lower error on frame 0 from sigma ~1 up) and where the invented
frames are lost. Training windows from the config's data through the stage's own collate (no flow-input or
condition dropout), fixed sigma, the same noise for every level.

    .venv/bin/python bench/bench_i2v_sigma_loss.py --i2v runs/i2v-jam-probe/export-raw --config configs/toy/i2v_jam.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from moviedreamer.train.config import load_config
from moviedreamer.train.data import EpisodeStream, ShardIndex
from moviedreamer.train.stages import load_stage
from moviedreamer.video.model import AnchoredI2V, v_target

SIGMAS = (0.05, 0.3, 1.0, 3.0, 10.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--i2v", type=Path, required=True, help="an exported clip model folder")
    ap.add_argument("--config", type=Path, required=True, help="the stage config it was trained with (data, options)")
    ap.add_argument("--batches", type=int, default=6, help="batches of 2 windows")
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config, ["options.flow_input_drop=0.0", "options.uncond_prob=0.0", "options.descriptor_drop=0.0", "options.min_frames=null"])
    stage = load_stage("i2v")(cfg)
    stage.build_model()  # sets the stage's flow / anchor layout
    model = AnchoredI2V.from_pretrained(args.i2v).eval()
    stream = EpisodeStream(ShardIndex(cfg.data), stage.samples, stage.keys, 0, 1, args.seed, stage.mix)
    torch.manual_seed(args.seed)
    rows = {s: ([], []) for s in SIGMAS}
    with torch.no_grad():
        for _ in range(args.batches):
            batch = stage.collate(stream.take(2), "cpu", torch.float32)
            clean, noise = batch["clean"], batch["noise"]
            for sig in SIGMAS:
                s = torch.full((clean.shape[0],), sig)
                v = model(clean + sig * noise, s, batch["cond"], batch["image_embeds"], batch["descriptor"], batch["ids"], batch["uncond"])
                err = (v - v_target(clean, noise, s)).pow(2)[:, :, : model.latent_channels]
                rows[sig][0].append(err[:, 0].mean().item())
                rows[sig][1].append(err[:, 1:].mean().item())
    print(f"{args.i2v}: appearance v-MSE per noise level, {2 * args.batches} windows of {cfg.data}")
    print("| sigma | given frame (frame 0) | frames to invent |\n|---|---|---|")
    for sig, (given, invented) in rows.items():
        print(f"| {sig} | {np.mean(given):.3f} | {np.mean(invented):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
