"""The clip model's motion field (video/motion_field.py) on held-out toy segments, beside the baseline that moves
nothing: end-point error of the displacements on pixels that move (px at 128), on the pixels that move against the
scenery (the characters' own motion: a camera move shifts every pixel, and would hide how characters fare), the
direction of the mean horizontal motion read right, and the visibility read right (baseline: everything in view);
then the characters' error by action, framing and camera move.

    .venv/bin/python bench/bench_motion_field.py --field runs/toy-motion-field/motion_field --segments 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from moviedreamer.train.fit_motion_field import RENDER, load_encoder, sample_segment
from moviedreamer.video.motion_field import MotionField

SEED = 82_000_000  # far from the training streams (seeded by the run's seed and step)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--field", type=Path, required=True, help="a motion_field folder")
    ap.add_argument("--encoder", type=Path, help="its descriptor encoder (default: the one its motion_field.json names)")
    ap.add_argument("--segments", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    field = MotionField.load(args.field)
    encoder = None
    if field.config.reader == "descriptor":  # the toy vocabulary reader needs no encoder
        enc_path = args.encoder or args.field / field.config.descriptor_encoder
        encoder = load_encoder(enc_path)
    rng = np.random.default_rng(SEED)
    rows = {name: {"epe": [], "epe_char": [], "dir": [], "seen": []} for name in ("field", "no motion")}
    groups: dict[str, dict[str, list]] = {}  # "action walk", "framing wide": the field's and no motion's EPE
    t0 = time.perf_counter()
    for _ in range(args.segments):
        frame, maps, seen, text, start_time, duration, params = sample_segment(rng, field.config.frames, with_params=True)
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
        d, vis = field.predict(x, field.states(encoder, [text], [start_time], [duration]))
        d, vis = d[0].numpy(), vis[0].numpy()
        moving = np.linalg.norm(maps, axis=-1) > 0.5
        camera = np.median(maps.reshape(len(maps), -1, 2), axis=1)[:, None, None]  # most of a frame is scenery
        own = np.linalg.norm(maps - camera, axis=-1) > 0.5  # pixels that move against the scenery: characters
        for name, pred, pv in (("field", d, vis), ("no motion", np.zeros_like(d), np.ones_like(vis))):
            r = rows[name]
            if moving.any():
                r["epe"].append(float(np.linalg.norm(pred - maps, axis=-1)[moving].mean()))
            if own.any():
                r["epe_char"].append(float(np.linalg.norm(pred - maps, axis=-1)[own].mean()))
                true_x = maps[..., 0][moving].mean()
                if abs(true_x) > 1.0:  # a clear horizontal motion: is its direction read right?
                    r["dir"].append(float(np.sign(pred[..., 0][moving].mean()) == np.sign(true_x)))
            r["seen"].append(float(((pv > 0.5) == seen).mean()))
            if own.any():
                for g in (f"action {params.action}", f"framing {params.framing}", f"move {params.move}"):
                    groups.setdefault(g, {}).setdefault(name, []).append(r["epe_char"][-1])
    print(f"{args.segments} held-out segments of {field.config.frames} frames at {RENDER} px, {time.perf_counter() - t0:.0f} s")
    print("| | EPE on moving pixels (px) | EPE on characters' own motion (px) | horizontal direction right | visibility right |")
    print("|---|---|---|---|---|")
    table = {}
    for name, r in rows.items():
        table[name] = {k: float(np.mean(v)) if v else None for k, v in r.items()}
        print(f"| {name} | {table[name]['epe']:.2f} | {table[name]['epe_char']:.2f} ({len(r['epe_char'])}) | {table[name]['dir']:.3f} ({len(r['dir'])}) | {table[name]['seen']:.3f} |")
    print("\nEPE on characters' own motion by group:\n| group | segments | field | no motion |\n|---|---|---|---|")
    by_group = {g: {k: float(np.mean(v)) for k, v in r.items()} | {"segments": len(r["field"])} for g, r in sorted(groups.items())}
    for g, r in by_group.items():
        print(f"| {g} | {r['segments']} | {r['field']:.2f} | {r['no motion']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"segments": args.segments, "field": str(args.field), "rows": table, "groups": by_group}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
